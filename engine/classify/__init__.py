"""The emotion classifier behind one interface (LiteRT, ONNX Runtime or Keras), one call per batch of faces."""
