"""Dense captioner for the MRES data engine (see README, "Dense captioner")."""
