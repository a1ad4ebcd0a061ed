"""`python -m engine.batch`: a whole archive of videos and photos, on local worker processes or Ray."""
