"""Frames in (cameras, files, photos, folders, URLs) and results out (window, video, images, JSONL, overlay, timelines)."""
