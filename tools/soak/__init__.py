"""The soak/abuse harness: ``realtime-tts bench soak`` (see main.py)."""
