"""midilm.evaluation.data: held-out rows joined into pieces."""

from __future__ import annotations

from midilm.evaluation.data import join_pieces


def test_pieces_are_joined_in_chunk_order_and_augmented_copies_skipped():
    rows = [
        {
            "input_ids": [1, 3, 30, 31, 2],
            "composer": 0,
            "source": "a.mid",
            "chunk": 1,
            "augmentation": "",
            "n_notes": 1,
        },
        {"input_ids": [1, 3, 20, 21], "composer": 0, "source": "a.mid", "chunk": 0, "augmentation": "", "n_notes": 2},
        {
            "input_ids": [1, 3, 22, 2],
            "composer": 0,
            "source": "a.mid",
            "chunk": 0,
            "augmentation": "pitch+1",
            "n_notes": 1,
        },
    ]
    (piece,) = join_pieces(rows, eos_id=2)
    assert piece["ids"] == [1, 3, 20, 21, 30, 31, 2] and piece["n_notes"] == 3
