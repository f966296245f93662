"""Data plugins: ``nmcml.model`` (MaceModel) and ``nmcml.trainingset`` (TrainingSet)."""
