"""Copies of the seed-1 pair that the old evaluation code (47dad66) can read: the same weights; the
train_config without the fields it does not know (lr_schedule, amp) and max_train_len under its old name."""
import json, shutil, sys, torch
from pathlib import Path
src_runs, dst_runs = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
entries = []
for name in ("alpha0_seed1", "alpha0.1_seed1"):
    s, d = src_runs / "cpu" / name, dst_runs / "cpu" / name
    d.mkdir(parents=True, exist_ok=True)
    ck = torch.load(s / "checkpoint_avg.pt", map_location="cpu", weights_only=False)
    tc = dict(ck["train_config"]); tc["max_len"] = tc.pop("max_train_len"); tc.pop("lr_schedule"); tc.pop("amp")
    ck["train_config"] = tc
    torch.save(ck, d / "checkpoint_avg.pt")
    for f in ("spm.model", "temperature.json"):
        shutil.copyfile(s / f, d / f)
    entries.append({"dir": str(d), "alpha": tc["alpha"], "seed": tc["seed"]})
(dst_runs / "study.json").write_text(json.dumps({"preset": "cpu", "runs": entries}))
print("ok")
