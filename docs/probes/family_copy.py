r"""Probe (issue 15): the same question on episodes laid out as the synthetic task families write them:
[bos] x1 y1 \n x2 y2 \n ... xq yq (no input separator; \n is id 0, the document boundary), a new task every
episode: `C` classes, each a key token (ids 17..1023) and a label word (ids 1..16); an input is `Lin` tokens,
filler (uniform) with the key where the family puts it (first, middle, last, majority). Not part of the package or
the tests: the bare loop behind README's "Learned absolute positions ..." bullet.

    .venv/bin/python docs/probes/family_copy.py train=last Lin=1 C=2 heads=1 tie=1 bal=1 bos=0 bound=0 seed=1

Prints the loss and each family's accuracy on 256 fresh episodes (chance 1 / C) every 250 steps. Knobs: key=value
(see `args.get` below). Measured (2026-12-02, before the model was built after seeding: its initial weights were
then a draw of their own, so these differ run to run): one-token inputs, 2 classes: 0.96 at step 1,000 once, 0.52 once;
3-token inputs, 3 classes: 0.30-0.36 after 1,750-2,250 steps, even with train=last; with `switch=1000` (the first
1,000 steps on Lin0=1-token, C0=2-class last-token tasks: metatrain.task_curriculum) and train=last, 0.99 at 1,750.

Rule transfer (2026-12-03, README "What meta-training teaches here is position-bound"): more families -- keyword
(the key anywhere), late / early (anywhere but first / last), pair (two classes' keys, the first wins), pools (the
package's majority: every token a key, a strict majority from the class's `K` keys) -- `K` keys per class, `NK` > 0
keys from their own ids 17..16+NK (fillers from the rest), `eval=` the families to measure, `neval` episodes each:

    .venv/bin/python docs/probes/family_copy.py train=late eval=first,middle,last heads=1 tie=1 bos=0 bound=0 \
        seed=1 switch=1000 steps=3000 neval=384
"""
import sys, math, time, torch
torch.set_num_threads(1)
args = dict(a.split("=") for a in sys.argv[1:])
V = 1024; NW = 16; C = int(args.get("C", 3)); k = int(args.get("k", 8)); Lin = int(args.get("Lin", 3))
B = int(args.get("B", 128)); steps = int(args.get("steps", 1500)); lr = float(args.get("lr", 3e-3))
arch = args.get("arch", "llama"); nl = int(args.get("layers", 2)); nh = int(args.get("heads", 2)); d = int(args.get("d", 64))
train_fams = args.get("train", "first,middle,majority").split(","); seed = int(args.get("seed", 0))
sep = int(args.get("sep", 0)); loss_on = args.get("loss", "all")
K = int(args.get("K", 1)); NK = int(args.get("NK", 0))
BOUND, S = 0, V  # boundary id 0 between examples; S an extra id after the input when sep=1
VV = V + 1
def episode_batch(n, fam, gen, Lin=Lin, C=C, K=K):
    # per episode: C * K keys (distinct, from 17..V or 17..16+NK), C words (distinct, from 1..16), k+1 examples
    keys = torch.stack([torch.randperm(NK or V - 17, generator=gen)[:C * K] for _ in range(n)]).view(n, C, K) + 17
    words = torch.stack([torch.randperm(NW, generator=gen)[:C] for _ in range(n)]) + 1
    cls = torch.randint(0, C, (n, k + 1), generator=gen)
    if int(args.get("bal", 0)):
        base = torch.arange(k) % C
        cls[:, :k] = torch.stack([base[torch.randperm(k, generator=gen)] for _ in range(n)])
    x = torch.randint(17 + NK, V, (n, k + 1, Lin), generator=gen)
    def key_of(c):  # one of the class's K keys per example (no draw with one key: the original probe's stream)
        pick = torch.randint(0, K, c.shape, generator=gen) if K > 1 else torch.zeros_like(c)
        return keys.view(n, C * K).gather(1, c * K + pick)
    key = key_of(cls)
    if fam == "first": x[:, :, 0] = key
    elif fam == "middle": x[:, :, Lin // 2] = key
    elif fam == "last": x[:, :, -1] = key
    elif fam in ("keyword", "late", "early"):
        lo, hi = {"keyword": (0, Lin), "late": (1, Lin), "early": (0, Lin - 1)}[fam]
        x.scatter_(2, torch.randint(lo, hi, (n, k + 1, 1), generator=gen), key.unsqueeze(-1))
    elif fam == "pair":
        rival = (cls + torch.randint(1, C, cls.shape, generator=gen)) % C
        where = torch.rand(n, k + 1, Lin, generator=gen).argsort(-1)[..., :2].sort(-1).values
        x.scatter_(2, where[..., :1], key.unsqueeze(-1))
        x.scatter_(2, where[..., 1:], key_of(rival).unsqueeze(-1))
    elif fam == "pools":
        own = Lin // 2 + 1
        owner = torch.cat([cls.unsqueeze(-1).expand(-1, -1, own),
                           (cls.unsqueeze(-1) + torch.randint(1, C, (n, k + 1, Lin - own), generator=gen)) % C], -1)
        owner = owner.gather(2, torch.rand(n, k + 1, Lin, generator=gen).argsort(-1))
        x = key_of(owner.view(n, -1)).view(n, k + 1, Lin)
    elif fam == "majority":
        m = Lin // 2 + 1
        pos = torch.stack([torch.stack([torch.randperm(Lin, generator=gen)[:m] for _ in range(k + 1)]) for _ in range(n)])
        x.scatter_(2, pos, key.unsqueeze(-1).expand(-1, -1, m))
    y = words.gather(1, cls)
    parts = [torch.zeros(n, 1, dtype=torch.long)] if int(args.get('bos', 1)) else []
    ans = []
    for i in range(k + 1):
        parts.append(x[:, i])
        if sep: parts.append(torch.full((n, 1), S))
        ans.append(sum(p.shape[1] for p in parts))
        parts.append(y[:, i:i + 1])
        if i < k and int(args.get('bound', 1)): parts.append(torch.zeros(n, 1, dtype=torch.long))
    return torch.cat(parts, 1), torch.tensor(ans)
torch.manual_seed(seed)  # before the model: its initial weights are the seed's (they were not before 2026-12-03)
if arch == "llama":
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VV, max_position_embeddings=128, hidden_size=d, num_hidden_layers=nl,
        num_attention_heads=nh, num_key_value_heads=nh, intermediate_size=2 * d, tie_word_embeddings=bool(int(args.get("tie", 0))), bos_token_id=0, eos_token_id=0, pad_token_id=0))
else:
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VV, n_positions=128, n_embd=d, n_layer=nl, n_head=nh, n_inner=2 * d,
        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0, eos_token_id=0))
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
warm = 100
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
gen = torch.Generator().manual_seed(seed + 1)
evs = {f: episode_batch(int(args.get("neval", 256)), f, torch.Generator().manual_seed(99))
       for f in args.get("eval", "first,middle,majority,last").split(",")}
def acc(f):
    seq, ans = evs[f]
    with torch.no_grad():
        lg = model(seq).logits[:, ans[-1] - 1, 1:NW + 1]
    return (lg.argmax(-1) + 1 == seq[:, ans[-1]]).float().mean().item()
t0 = time.time()
for s in range(steps):
    if s < int(args.get("switch", 0)):
        seq, ans = episode_batch(B, "last", gen, Lin=int(args.get("Lin0", 1)), C=int(args.get("C0", 2)), K=1)
    else:
        fam = train_fams[s % len(train_fams)]
        seq, ans = episode_batch(B, fam, gen)
    tpos = ans if loss_on == "all" else ans[-1:]
    lg = model(seq).logits[:, tpos - 1].reshape(-1, VV)
    loss = torch.nn.functional.cross_entropy(lg, seq[:, tpos].reshape(-1))
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    if s % 250 == 0 or s == steps - 1:
        print(f"step {s} loss {loss.item():.3f} " + " ".join(f"{f} {acc(f):.2f}" for f in evs) + f" t {time.time()-t0:.0f}s", flush=True)
