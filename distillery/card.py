"""The dataset card (README.md beside the data) and its pictures. Pure logic.

Everything comes from the manifest, so a card can be rewritten from it alone. Columns are
the Arrow schemas the shards were written with (`manifest["columns"]`, from `card_facts`);
each is described by `distillery.columns`.
"""

from __future__ import annotations

import pyarrow as pa
import yaml

from distillery.charts import judge_chart, length_chart, length_histogram
from distillery.columns import describe

JUDGE_PICTURE = "judge_scores.svg"
LENGTH_PICTURE = "lengths.svg"
PICTURES = (JUDGE_PICTURE, LENGTH_PICTURE)  # beside the card; written before the manifest
DISTRIBUTIONS = {"raw_logprobs": "the model's own log-softmax, before temperature and top-p",
                 "processed_logprobs": "after temperature and top-p: the distribution the answer was sampled from"}
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def _columns(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def _kind(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"distillery.kind", b"kept").decode()


def _words(texts: list[str | None]) -> list[int]:
    return [len((t or "").split()) for t in texts]


def answer_lengths(table: pa.Table) -> dict:
    """The length histogram of the published answers: completion tokens when every row has them,
    else words; chosen and rejected answers side by side for preference pairs."""
    names = table.column_names
    if "chosen" in names:
        answers = {side: [" ".join(m["content"] for m in msgs or []) for msgs in table.column(side).to_pylist()]
                   for side in ("chosen", "rejected")}
        return length_histogram({side: _words(texts) for side, texts in answers.items()}, "words")
    if "completion_tokens" in names and table.num_rows and table.column("completion_tokens").null_count == 0:
        return length_histogram({"answers": table.column("completion_tokens").to_pylist()}, "tokens")
    texts = table.column("response").to_pylist() if "response" in names else []
    return length_histogram({"answers": _words(texts)}, "words")


def card_facts(data: pa.Table, rejected: pa.Table | None) -> dict:
    """What the card needs beyond the summary, taken from the tables as written."""
    return {"columns": schema_facts(data.schema, rejected.schema if rejected is not None else None),
            "lengths": answer_lengths(data)}


def schema_facts(data: pa.Schema, rejected: pa.Schema | None) -> dict:
    """The kind of dataset and its columns, as the manifest lists them for the card."""
    columns = {"kind": _kind(data), "data": _columns(data)}
    if rejected is not None:
        columns["rejected"] = _columns(rejected)
    return columns


def pictures(summary: dict) -> dict[str, str]:
    """File name -> SVG, for the pictures this summary has data for."""
    out = {}
    judge = summary.get("judge_report")
    if judge and judge.get("judged"):
        out[JUDGE_PICTURE] = judge_chart(judge["histogram"])
    lengths = summary.get("lengths")
    if lengths and any(s["rows"] for s in lengths["stats"].values()):
        out[LENGTH_PICTURE] = length_chart(lengths)
    return out


def _size_category(rows: int) -> str:
    return next((name for bound, name in SIZES if rows < bound), "n>1B")


def front_matter(manifest: dict) -> dict:
    recipe, summary = manifest["recipe"], manifest["summary"]
    pairs, kd = "pairs" in summary, bool(manifest.get("kd"))
    tags = ["synthetic", "distillation", "distillery", "dpo" if pairs else "sft"]
    tags += ["preference"] if pairs else []
    tags += ["knowledge-distillation", "logprobs"] if kd else []
    size = sum(e.get("bytes", 0) for e in manifest.get("shards", []))
    return {
        "license": recipe.get("output", {}).get("license", "other"),
        # the prompt templates, rubric and system prompts Distillery writes are English
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": tags,
        "size_categories": [_size_category(manifest.get("rows", summary.get("kept", 0)))],
        "pretty_name": manifest["name"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        # `datasets` keys its cache of a local folder on the card (configs, dataset_info), not on
        # the files: without this build's own counts a rebuilt folder would load the old rows.
        # The sizes are the Parquet shards' bytes (the Arrow size is not known without reading them).
        "dataset_info": {
            "splits": [{"name": "train", "num_examples": manifest.get("rows", summary.get("kept", 0)), "num_bytes": size}],
            "download_size": size,
            "dataset_size": size,
        },
    }


def _teachers(recipe: dict) -> str:
    teacher, sampling = recipe["teacher"], recipe["sampling"]
    endpoint = teacher.get("endpoint")
    via = (f"`{endpoint['model']}` through the OpenAI-compatible endpoint {endpoint['base_url']}" if endpoint else
           f"`{teacher['model']}` via vLLM ({teacher['dtype']}, max_model_len {teacher['max_model_len']})")
    line = (f"- Teacher: {via}, sampling "
            f"n={sampling['n']}, temperature={sampling['temperature']}, top_p={sampling['top_p']}, "
            f"max_tokens={sampling['max_tokens']}, seed={sampling['seed']}.")
    if teacher.get("system_prompt"):
        line += f" System message: \"{teacher['system_prompt']}\"."
    for extra in recipe.get("extra_teachers") or []:
        line += f"\n- Also teacher `{extra['name']}`: model `{extra.get('model') or teacher['model']}`" + "".join(
            f", {k}={extra[k]}" for k in ("temperature", "top_p", "n", "seed") if extra.get(k) is not None) + "."
    return line


def _judge(recipe: dict, pairs: bool) -> str:
    judge = recipe["judge"]
    if not judge["enabled"]:
        return "- Judge: disabled."
    endpoint = judge.get("endpoint") or (recipe["teacher"].get("endpoint") if not judge.get("model") else None)
    who = f"`{endpoint['model']}` at {endpoint['base_url']}" if endpoint else f"`{judge.get('model') or recipe['teacher']['model']}`"
    line = (f"- Judge: {who} ({judge['method']}) scored each answer 1-10 "
            f"against the rubric \"{judge['rubric']}\"")
    if pairs:
        return line + "; the scores rank the answers to each prompt (no score threshold: see Preference pairs)."
    return line + f"; answers scoring below {judge['min_score']} were rejected."


def _cost(summary: dict) -> str:
    cost = summary.get("cost")
    if not cost:
        return ""
    parts = ", ".join(f"{who} `{b['model']}` {b['prompt_tokens']} prompt + {b['completion_tokens']} completion tokens, "
                      f"${b['usd']:.4f}" for who, b in cost["by"].items())
    return f"\n- Cost: ${cost['usd']:.4f} at the recipe's endpoint prices ({parts})."


def _guards(recipe: dict, summary: dict) -> str:
    """The guard stage's settings and what it removed (recipes from before the guards have none)."""
    guards = recipe.get("guards")
    if not guards:
        return "- Guards: none (built before the guard stage)."
    parts = []
    if guards["identity"]["enabled"]:
        own = ", ".join(x for x in (guards["identity"]["name"], guards["identity"]["maker"]) if x)
        parts.append(f"identity leaks ({guards['identity']['action']}{'; the student is ' + own if own else ''})")
    if guards["decontam"]["eval_sets"]:
        parts.append("benchmark contamination against " + ", ".join(e["name"] for e in guards["decontam"]["eval_sets"])
                     + f" ({guards['decontam']['ngram']}-grams, more than {guards['decontam']['threshold']:.0%} of an item)")
    if guards["repetition"]["enabled"]:
        parts.append("Gopher repetition limits")
    rejected = (summary.get("guards") or {}).get("rejected", {})
    removed = ", ".join(f"{reason} {sum(t.values())}" for reason, t in sorted(rejected.items())) or "none"
    return f"- Guards: {'; '.join(parts) or 'off'}. Removed: {removed}."


def _dedup(recipe: dict) -> str:
    dedup = recipe["dedup"]
    if not dedup["enabled"]:
        return "- Dedup: disabled."
    return (f"- Dedup: exact (normalized {dedup['field']}), then MinHash-LSH with {dedup['num_perm']} permutations, "
            f"{dedup.get('shingle', 'word')} {dedup['ngram']}-grams, Jaccard threshold {dedup['threshold']}.")


def _license(recipe: dict) -> str:
    license_id = recipe.get("output", {}).get("license", "other")
    stated = f"`{license_id}` (recipe field `output.license`)"
    if license_id == "other":
        stated = "`other`: the recipe did not name one (set `output.license`)"
    return (f"License: {stated}. The answers are model output: they come under the terms of the teacher model(s) "
            "and the prompts under those of the seed data, so check both before you choose or publish a license "
            "(the Self-Instruct seed tasks and SmolLM2 are Apache-2.0).")


def _kd(manifest: dict) -> str:
    kd = manifest.get("kd")
    if not kd:
        return ""
    tok = kd.get("tokenizer") or {}
    bits = f", {kd['logprob_mantissa_bits']} mantissa bits kept" if kd.get("logprob_mantissa_bits") else ""
    weights = f" Teachers merged with weights {kd['teacher_weights']}." if kd.get("teacher_weights") else ""
    files = ", ".join(f"`{f}`" for f in tok.get("files") or [tok.get("path", "kd/tokenizer.json")])
    return f"""
## Knowledge distillation

Every row carries the teacher's top-K next-token distribution at each answer token (the `kd_` columns).

- K (top_k): {kd['top_k']}; distribution: `{kd['distribution']}` ({DISTRIBUTIONS.get(kd['distribution'], '')}).
- Logprobs stored as {kd['logprob_dtype']}{bits}; {kd.get('entries', 0)} (token, k) entries{_per_entry(kd)}.
- Position: {kd.get('position', 'kd_topk_*[t] is the distribution that predicted kd_token_ids[t]')}.{weights}
- Tokenizer: `{tok.get('name')}`, vocabulary size {tok.get('vocab_size')}, fingerprint sha256 `{tok.get('sha256')}`. The ids index
  this vocabulary; its Hugging Face files are stored in {files} (`AutoTokenizer.from_pretrained("kd")` in this folder loads them).
  Check a student's tokenizer with `distillery kd-check <this folder> --student <model>` before training on the ids.
"""


def _per_entry(kd: dict) -> str:
    return f", {kd['bytes_per_entry']} bytes each after compression" if kd.get("bytes_per_entry") else ""


def _pairs(manifest: dict) -> str:
    summary, prefs = manifest["summary"], manifest["recipe"].get("preferences", {})
    if "pairs" not in summary:
        return ""
    check = ("each pair was confirmed by a pairwise judgement in both orders (A,B) and (B,A); pairs whose verdicts "
             "disagreed, tied or contradicted the scores were excluded" if prefs.get("pairwise_check") else "no pairwise check (off in the recipe)")
    excluded = "\n".join(f"| {k} | {v} |" for k, v in summary["rejected_by_reason"].items()) or "| (none) | 0 |"
    dropped = summary.get("completions_rejected_by_reason") or {}
    return f"""
## Preference pairs

Each row is one prompt with a chosen and a rejected answer: the best- and worst-scored of its
{summary['completions_per_prompt']} completions, kept when the judge scores differ by at least
min_margin = {prefs.get('min_margin')}; {check}.

{summary['pairs']} pairs from {summary['rows_in']} prompts. Prompts without a pair, by reason:

| reason | prompts |
| --- | ---: |
{excluded}

Completions removed before pairing (dedup, judge): {', '.join(f'{k} {v}' for k, v in dropped.items()) or 'none'}.
"""


def _fallback_columns(manifest: dict) -> dict:
    """For manifests written before `columns` was recorded: the schemas as declared now."""
    from distillery.kd import with_kd
    from distillery.schema import PREFERENCE_SCHEMA, REJECT_SCHEMA, ROW_SCHEMA

    schema = PREFERENCE_SCHEMA if "pairs" in manifest["summary"] else ROW_SCHEMA
    if manifest.get("kd"):
        schema = with_kd(schema, manifest["kd"].get("logprob_dtype", "float16"))
    return {"kind": _kind(schema), "data": _columns(schema), "rejected": _columns(REJECT_SCHEMA)}


def column_table(columns: list[dict], kind: str) -> str:
    rows = [f"| `{c['name']}` | `{c['type']}` | {describe(c['name'], kind) or ''} |" for c in columns]
    return "\n".join(["| column | type | description |", "| --- | --- | --- |", *rows])


def _pictures(manifest: dict) -> str:
    shown = [f"![{name.removesuffix('.svg').replace('_', ' ')}]({name})" for name in pictures(manifest["summary"])]
    return "\n\n".join(shown)


def dataset_card(manifest: dict) -> str:
    from distillery.report import format_summary

    recipe, summary = manifest["recipe"], manifest["summary"]
    columns = manifest.get("columns") or _fallback_columns(manifest)
    pairs = "pairs" in summary
    what = "Preference pairs (chosen/rejected, for DPO)" if pairs else "Synthetic instruction data"
    rejected = column_table(columns["rejected"], "rejected") if columns.get("rejected") else ""
    front = yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True)
    return f"""---
{front}---

# {manifest['name']}

{what} written by a teacher model with Distillery (recipe flow `{recipe.get('flow', 'distill')}`, run `{manifest['run_id']}`, {manifest['created_at']}).

{_license(recipe)}

```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder", split="train")  # reads data/ only
```

## How it was made

- Seeds: `{recipe['source']['uri']}` (instruction column `{recipe['source']['instruction_column']}`), {summary['rows_in']} rows.
{_teachers(recipe)}
{_guards(recipe, summary)}
{_dedup(recipe)}
{_judge(recipe, pairs)}{_cost(summary)}
{_pairs(manifest)}{_kd(manifest)}
## Columns

`data/` ({manifest.get('rows', summary['kept'])} rows):

{column_table(columns['data'], columns.get('kind', 'kept'))}

## Counts

```
{format_summary(summary)}
```

{_pictures(manifest)}

## Files

- `data/`: the published rows (Parquet).
- Rejected rows: the build folder keeps every removed row with its stage and reason under `rejected/` (not training
  data, and not part of an export; the card's `configs` keep it out of `load_dataset`).
- `manifest.json`: every shard with its row count and sha256, the full recipe and the package versions; written last.
- `report.md`: the run report; `judge_scores.svg`, `lengths.svg`: its pictures.{chr(10) + '- `kd/`: the teacher tokenizer the soft targets index.' if manifest.get('kd') else ''}

Columns of the rejected rows (build folder only):

{rejected}

## Caveats

Every answer is model-written and unreviewed by people. A small teacher writes weak answers; the judge's scores are themselves model output.
"""
