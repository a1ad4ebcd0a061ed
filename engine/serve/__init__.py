"""The live view: an HTTP server inside the engine process (MJPEG, server-sent events, one page)."""
