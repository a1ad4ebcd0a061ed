"""Faces: detect them (BlazeFace via LiteRT or MediaPipe), follow boxes between detections, crop them like
FER2013 faces, and track ids with smoothed, hysteresis-stable emotions."""
