"""Probe (issue 15): does a tiny causal LM learn to copy a label in context, from Chan et al.'s sequences written
in tokens? Not part of the package or the tests: the bare loop behind README's "Learned absolute positions ..."
bullet, kept so the numbers can be rerun.

    .venv/bin/python docs/probes/token_copy.py arch=llama steps=1000 seed=0     # ~1 min on one core

A sequence is x1 l1 ... xN lN xq: N context items from `ncls` classes (N / ncls each, shuffled), one token per item
(K item ids), the query one of those classes; labels are `ncls` of L label ids drawn afresh per sequence
(`fixed=1`: each class's own label, Chan et al.'s training), so only the context says which label is the query's.
The loss is on the query's label (`loss=all`: every label). Prints the loss and the accuracy on 512 fresh sequences
with labels drawn afresh (chance 1 / ncls) every 250 steps. Knobs: key=value (see `args.get` below).
Measured (2026-12-02, 2-core box): arch=gpt2 stays at 0.5 for 5,000 steps; arch=llama 0.98 by step 1,000.
"""
import sys, math, time, torch, numpy as np
torch.set_num_threads(1)
from transformers import GPT2Config, GPT2LMHeadModel
args = dict(a.split("=") for a in sys.argv[1:])
K = int(args.get("K", 2048)); L = int(args.get("L", 32)); N = int(args.get("N", 8)); B = int(args.get("B", 128))
steps = int(args.get("steps", 1500)); lr = float(args.get("lr", 3e-3)); sep = int(args.get("sep", 0))
loss_on = args.get("loss", "query"); nl = int(args.get("layers", 2)); nh = int(args.get("heads", 1))
d = int(args.get("d", 64)); seed = int(args.get("seed", 0)); fixed = int(args.get("fixed", 0))
ncls = int(args.get("ncls", 2)); tie = int(args.get("tie", 1))
S, E = K + L, K + L + 1
V = K + L + 2
g = torch.Generator().manual_seed(seed)
fixed_label = torch.randint(0, L, (K,), generator=g)
def batch(n, gen, classes_lo=0, classes_hi=K, fixed=fixed):
    cls = torch.stack([torch.randperm(classes_hi - classes_lo, generator=gen)[:ncls] for _ in range(n)]) + classes_lo
    if fixed:
        labs = fixed_label[cls]
    else:
        labs = torch.stack([torch.randperm(L, generator=gen)[:ncls] for _ in range(n)])
    # bursty: N context items, N/ncls from each class, shuffled; query from one of them
    idx = torch.arange(N).repeat(n, 1) % ncls
    idx = torch.stack([r[torch.randperm(N, generator=gen)] for r in idx])
    q = torch.randint(0, ncls, (n, 1), generator=gen)
    idx = torch.cat([idx, q], 1)
    x = cls.gather(1, idx); y = labs.gather(1, idx) + K
    if sep:
        cols = []
        for i in range(N + 1):
            cols += [x[:, i], torch.full((n,), S), y[:, i]]
            if i < N: cols.append(torch.full((n,), E))
    else:
        cols = []
        for i in range(N + 1):
            cols += [x[:, i], y[:, i]]
    seq = torch.stack(cols, 1)
    # target positions: label positions (predict label from the previous position)
    per = 4 if sep else 2
    lab_pos = torch.tensor([i * per + (2 if sep else 1) for i in range(N + 1)])
    return seq, lab_pos
cfg = GPT2Config(vocab_size=V, n_positions=64, n_embd=d, n_layer=nl, n_head=nh, n_inner=2 * d,
                 resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, tie_word_embeddings=bool(tie))
torch.manual_seed(seed)
arch = args.get("arch", "gpt2")
if arch == "llama":
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=V, max_position_embeddings=64, hidden_size=d, num_hidden_layers=nl,
                      num_attention_heads=nh, num_key_value_heads=nh, intermediate_size=2 * d,
                      tie_word_embeddings=bool(tie), bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
else:
    model = GPT2LMHeadModel(cfg)
if int(args.get("freeze", 0)):
    model.get_input_embeddings().weight.data.normal_(0, 1 / d ** 0.5 * float(args.get("escale", 1)))
    model.get_input_embeddings().requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
warm = 100
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
gen = torch.Generator().manual_seed(seed + 1)
egen = torch.Generator().manual_seed(999)
ev, evpos = batch(512, egen, 0, K, fixed=0)
def evaluate():
    with torch.no_grad():
        lg = model(ev).logits
        p = lg[:, evpos[-1] - 1]
        return (p.argmax(-1) == ev[:, evpos[-1]]).float().mean().item()
t0 = time.time()
for s in range(steps):
    seq, pos = batch(B, gen)
    out = model(seq).logits
    tpos = pos if loss_on == "all" else pos[-1:]
    lg = out[:, tpos - 1].reshape(-1, V); tg = seq[:, tpos].reshape(-1)
    loss = torch.nn.functional.cross_entropy(lg, tg)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    if s % 250 == 0 or s == steps - 1:
        print(f"step {s} loss {loss.item():.3f} acc {evaluate():.3f} t {time.time()-t0:.0f}s", flush=True)
