"""Training: a model from the data step's rows (train.py), building on a trained one, and publishing.

trainer.py    the arguments, the collator, the sampler, the Trainer, the callbacks
finetune.py   building on a trained model: extended tokenizer, grown embeddings, LoRA, replay, lineage
hub.py        dataset and model cards, pushes to the Hub
"""
