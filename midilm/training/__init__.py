"""Training: a model from the data step's rows (train.py), building on a trained one, and publishing.

arguments.py  ModelArguments, DataArguments, TRAINING_DEFAULTS (midilm's defaults for TrainingArguments)
data.py       the prepared dataset read and checked; the guard's bounds; the context training uses
collator.py   MidiCollator: crops, infill spans, composer dropout, labels
sampler.py    ComposerBalancedSampler
trainer.py    MidiTrainer; saving a sharded model whole; the last complete checkpoint
callbacks.py  TensorBoard samples during training; none under FSDP
finetune.py   building on a trained model: extended tokenizer, grown embeddings, LoRA, replay, lineage
hub.py        dataset and model cards, pushes to the Hub
"""
