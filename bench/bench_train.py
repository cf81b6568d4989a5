"""Training throughput: the HF Trainer (as train.py runs it) against a bare PyTorch loop.

    python bench/bench_train.py                                     # CPU, tiny preset, batch 8 x 512
    python bench/bench_train.py --steps 5 --warmup 2                # smoke run
    python bench/bench_train.py --device cuda --preset small --seq_len 2048 --batch 8 --bf16 --compile

Both sides use the same model config, initial weights, batch, sequence length, collator and
optimizer (AdamW, constant learning rate); each runs --warmup steps untimed, then --steps timed.
tokens/s counts every position of the padded batch (all rows are full length here). On a GPU it also
prints model FLOPs utilisation: 6 x parameters x tokens/s (plus attention) over --peak_tflops.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

from midilm.core.modeling import build_config
from midilm.core.rows import RowLayout, body_room
from midilm.core.tokenizer import build_tokenizer
from midilm.training.collator import MidiCollator


class StepClock(TrainerCallback):
    """Wall time from the end of the warm-up steps to the end of the last step."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.start, self.end = warmup, device, None, None

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def random_rows(n: int, seq_len: int, vocab: int, layout: RowLayout, composer: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    body = torch.randint(10, vocab, (n, body_room(seq_len)), generator=g)
    return [layout.continuation_prompt(composer, row.tolist()) for row in body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model_type", default="llama")
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()

    tokenizer, composer_map = build_tokenizer({"pitch_range": [21, 109], "beat_res": {"0_4": 8, "4_12": 4}}, ["x"])
    config = build_config(args.model_type, args.preset, tokenizer, composer_map, args.seq_len)
    config.vocab_size = args.vocab  # a BPE-sized vocabulary; ids are random, so no tokenizer is needed
    total = args.warmup + args.steps
    rows = random_rows(
        total * args.batch, args.seq_len, args.vocab, RowLayout.for_tokenizer(tokenizer), composer_map.token_ids[0]
    )
    collator = MidiCollator(
        config.pad_token_id, composer_map.none_id, 0.15, args.seq_len, torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    initial = AutoModelForCausalLM.from_config(config).state_dict()
    params = sum(v.numel() for k, v in initial.items() if "lm_head" not in k)
    dtype = torch.bfloat16 if args.bf16 else torch.float32

    # Bare loop
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(initial)
    model.to(args.device).train()
    step_fn = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for step in range(total):
        if step == args.warmup:
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = {
            k: v.to(args.device)
            for k, v in collator([{"input_ids": r} for r in rows[step * args.batch : (step + 1) * args.batch]]).items()
        }
        with torch.autocast(args.device, dtype=dtype, enabled=args.bf16):
            loss = step_fn(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    bare_seconds = time.perf_counter() - start

    # Trainer, configured as train.py configures it (no eval, no saving inside the timed steps)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(initial)
    clock = StepClock(args.warmup, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            max_steps=total,
            per_device_train_batch_size=args.batch,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            report_to=[],
            logging_steps=10**9,
            save_strategy="no",
            eval_strategy="no",
            bf16=args.bf16,
            torch_compile=args.compile,
            use_cpu=args.device == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=Dataset.from_dict({"input_ids": rows}),
            data_collator=collator,
            callbacks=[clock],
        )
        trainer.train()
    trainer_seconds = clock.end - clock.start

    tokens = args.steps * args.batch * args.seq_len
    bare_tps, trainer_tps = tokens / bare_seconds, tokens / trainer_seconds
    print(
        f"### Training throughput — {datetime.date.today()}, {platform.node()}, {args.device}"
        f"{' ' + torch.cuda.get_device_name() if args.device == 'cuda' else f' ({os.cpu_count()} cores)'}, torch "
        f"{torch.__version__}"
    )
    print(
        f"`python bench/bench_train.py {' '.join(sys.argv[1:])}` — {args.model_type} {args.preset} "
        f"({params / 1e6:.1f}M parameters, tied head counted once), batch {args.batch} x {args.seq_len}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, "
        f"{'bf16' if args.bf16 else 'fp32'}{', compiled' if args.compile else ''}\n"
    )
    print("| loop | tokens/s | ratio to bare loop |\n|---|---|---|")
    print(f"| bare PyTorch | {bare_tps:,.0f} | 1.00 |")
    print(f"| HF Trainer (train.py) | {trainer_tps:,.0f} | {trainer_tps / bare_tps:.2f} |")
    if args.device == "cuda":
        layers, hidden = config.num_hidden_layers, config.hidden_size
        flops_per_token = 6 * params + 12 * layers * hidden * args.seq_len
        print(
            f"\nMFU (Trainer): {flops_per_token * trainer_tps / (args.peak_tflops * 1e12):.1%} of "
            f"{args.peak_tflops:g} TFLOPS"
        )


if __name__ == "__main__":
    main()
