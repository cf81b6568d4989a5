"""The data step: MIDI sources → scanned pieces → tokenized rows → an Arrow DatasetDict that training only reads.

sources.py   where MIDI comes from (folders, the music21 corpus, Hub datasets)
corpus.py    the bundled music21 corpus and its cache
scan.py      one read per file in worker processes, sanity bounds
dataset.py   pieces to rows (continuation, accompaniment, infill), splits, augmentation
prepare.py   the whole step: prepare(), its arguments, prepare_config.json
"""
