"""The GPU teacher's parts, one concern a module; its command line is `python -m models.gpu_teacher`.

    pack         FER2013 folders <-> one .npz of JPEG bytes that travels to the GPU machine
    folds        the k-fold split shared with the Keras teachers (models.kfold), and face-key lookup
    nets         the PyTorch nets (ResNet-18 and VGG layouts) and their input scaling
    fit          training one net for a fixed time on the clock, with its weight average (EMA)
    oof          k-fold nets' answers -> one out-of-fold soft label per training face
    onnx_export  trained nets -> one averaging ONNX model under the model contract

Why a package: PyTorch is optional (not a project dependency) and only `nets`, `fit` and
`onnx_export` need it, imported inside their functions; `pack`, `folds` and `oof` are numpy only,
so the Keras side (models.kfold, models.distill) uses them on a machine without PyTorch.
"""
