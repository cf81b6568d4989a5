"""Preference tuning (DPO with TRL) of a trained midilm model: the score (`score`), the rounds (`loop`)."""
