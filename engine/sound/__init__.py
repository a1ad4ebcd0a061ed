"""Sound cues: clips that match a face's stable emotion, played or rendered into a WAV."""
