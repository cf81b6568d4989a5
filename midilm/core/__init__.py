"""What every stage shares: the row layout, the tokenizer, the model folder, errors, atomic writes, the flags.

rows.py         THE ROW LAYOUT: the only module that knows a row's offsets
tokenizer.py    REMI, BPE, composer tokens, TOKENIZER_DEFAULTS
modeling.py     the model folder: configs, loading, sampling_defaults
melody.py       a score's melody line (the data step's MELODY rows, the accompaniment's prompt)
midi_checks.py  whether a MIDI file is usable (the scan, and every MIDI a user hands to sampling)
cli.py          defaults → config file → flags; one-line InputErrors
errors.py       InputError
outputs.py      atomic writes
"""
