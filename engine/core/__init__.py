"""The shared core at the bottom: the model contract, preprocessing, errors, argument types, CPU facts, the
format table and the plain data types. Training, export and the benchmarks use these too; nothing here
imports another engine sub-package."""
