"""Running the study: the profiles, the run's artefact cache (`Experiment`), the parallel training
stage, the notebooks executed end to end and which of them a rerun must execute."""
