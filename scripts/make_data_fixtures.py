#!/usr/bin/env python3
"""Make the dataset-pipeline fixtures for lorafit-train with LLaMA-Factory's own code (run by hand).

Needs tokenizers, transformers and `pip install --no-deps llamafactory` (0.9.5 used) plus `datasets`.
Writes under crates/lorafit-data/tests/fixtures/lf095/ (the newer, larger set is scripts/make_lf_data_fixtures.py):

  tok/tokenizer.json, tok/tokenizer_config.json   a byte-level BPE tokenizer trained here on the
                                                  rows below (English and Chinese), with the special
                                                  tokens of the templates tested
  text/dataset_info.json, text/*.json(l)          an alpaca dataset (system column, history) and a
                                                  sharegpt dataset (system turn, multi-turn)
  data_expected.json                              for each template × dataset × cutoff_len: the
                                                  input_ids and labels LLaMA-Factory's
                                                  SupervisedDatasetProcessor produces, and one
                                                  packed case (PackedSupervisedDatasetProcessor)

    python3 scripts/make_data_fixtures.py
"""
import importlib.machinery
import json
import os
import sys
import types

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # transformers 5.23 here; the data code does not care
# LLaMA-Factory imports torchaudio for audio inputs only; a stub keeps it out of this environment.
_ta = types.ModuleType("torchaudio")
_ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
sys.modules.setdefault("torchaudio", _ta)

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import llamafactory  # noqa: E402
from llamafactory.data.converter import AlpacaDatasetConverter, SharegptDatasetConverter  # noqa: E402
from llamafactory.data.parser import get_dataset_list  # noqa: E402
from llamafactory.data.processor.supervised import (  # noqa: E402
    PackedSupervisedDatasetProcessor,
    SupervisedDatasetProcessor,
)
from llamafactory.data.template import get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.hparams import DataArguments  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-data", "tests", "fixtures", "lf095")
SPECIALS = ["<s>", "</s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<｜User｜>",
            "<｜Assistant｜>", "[INST]", "[/INST]"]

ALPACA = [
    {"instruction": "What is 2 + 3?", "input": "", "output": "2 + 3 = 5."},
    {"instruction": "Translate to French.", "input": "Good morning, my friend.", "output": "Bonjour, mon ami."},
    {"instruction": "用一句话介绍大语言模型微调。", "input": "", "output": "微调就是在预训练模型上用少量数据继续训练，让它适应新任务。",
     "system": "你是一个乐于助人的助手。"},
    {"instruction": "And 10 - 4?", "input": "", "output": "10 - 4 = 6.",
     "history": [["What is 2 + 3?", "5."], ["Times 2?", "10."]]},
    {"instruction": "Summarise: LoRA trains two small matrices per layer instead of the full weight, "
                    "so memory for gradients and optimizer states shrinks by orders of magnitude.",
     "input": "Keep it short.", "output": "LoRA trains small low-rank updates, so it needs far less memory."},
    {"instruction": "Explain why the sky is blue in detail, covering Rayleigh scattering.", "input": "",
     "output": "Sunlight scatters off air molecules; shorter blue wavelengths scatter much more strongly "
               "than red ones (Rayleigh scattering goes as one over wavelength to the fourth), so blue "
               "light reaches our eyes from every direction of the sky.",
     "system": "Answer like a physics teacher."},
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": "Hi! Who are you?"},
                       {"from": "gpt", "value": "I am a small test model."}]},
    {"conversations": [{"from": "system", "value": "You only answer in numbers."},
                       {"from": "human", "value": "How many legs does a spider have?"},
                       {"from": "gpt", "value": "8"},
                       {"from": "human", "value": "And a cat?"},
                       {"from": "gpt", "value": "4"}]},
    {"conversations": [{"from": "human", "value": "写一首关于秋天的短诗。"},
                       {"from": "gpt", "value": "<think>\n要短，要有秋意。\n</think>\n\n秋风起，落叶黄，一行大雁向南方。"}]},
    {"conversations": [{"from": "human", "value": "List three prime numbers and explain what makes a number prime, "
                                                   "then give the next prime after each of them."},
                       {"from": "gpt", "value": "2, 3 and 5. A prime has exactly two divisors, 1 and itself. "
                                                "The next primes are 3, 5 and 7."}]},
    {"conversations": [{"from": "human", "value": "What is 6 times 7?"},
                       {"from": "gpt", "value": "<think>\nSix sevens.\n</think>\n\n42."},
                       {"from": "human", "value": "Half of that?"},
                       {"from": "gpt", "value": "<think>\n42 / 2.\n</think>\n\n21."},
                       {"from": "human", "value": "And plus one?"},
                       {"from": "gpt", "value": "22."}]},
]
DATASET_INFO = {
    "alpaca_demo": {"file_name": "alpaca_demo.json",
                    "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                "system": "system", "history": "history"}},
    "sharegpt_demo": {"file_name": "sharegpt_demo.jsonl", "formatting": "sharegpt"},
}
TEMPLATES = ["default", "empty", "llama3", "qwen", "mistral", "deepseekr1"]


def make_tokenizer(path):
    texts = []
    for r in ALPACA:
        texts += [r["instruction"], r["input"], r["output"], r.get("system", "")]
        for a, b in r.get("history", []):
            texts += [a, b]
    for r in SHAREGPT:
        texts += [m["value"] for m in r["conversations"]]
    texts += ["Human: ", "Assistant:", "System: ", "user", "assistant", "system", "<think>", "</think>",
              "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts * 3, trainer)
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "model_max_length": 4096}, f, indent=1)


def main():
    tok_dir = os.path.join(OUT, "tok")
    text_dir = os.path.join(OUT, "text")
    make_tokenizer(tok_dir)
    os.makedirs(text_dir, exist_ok=True)
    with open(os.path.join(text_dir, "alpaca_demo.json"), "w") as f:
        json.dump(ALPACA, f, ensure_ascii=False, indent=1)
    with open(os.path.join(text_dir, "sharegpt_demo.jsonl"), "w") as f:
        for r in SHAREGPT:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(text_dir, "dataset_info.json"), "w") as f:
        json.dump(DATASET_INFO, f, indent=1)

    # (template, dataset, cutoff_len, options): every template × dataset × cutoff plain, packing once,
    # then train_on_prompt, mask_history (a reasoning template too) and neat_packing.
    specs = []
    for template in TEMPLATES:
        for dataset in ("alpaca_demo", "sharegpt_demo"):
            for cutoff in (1024, 24):
                specs.append((template, dataset, cutoff, {}))
    specs.append(("qwen", "alpaca_demo", 1024, {"packing": True}))
    for template in ("qwen", "llama3"):
        for dataset in ("alpaca_demo", "sharegpt_demo"):
            for cutoff in (1024, 24):
                specs.append((template, dataset, cutoff, {"train_on_prompt": True}))
    for template in ("qwen", "deepseekr1"):
        for dataset in ("alpaca_demo", "sharegpt_demo"):
            for cutoff in (1024, 24):
                specs.append((template, dataset, cutoff, {"mask_history": True}))
    for dataset in ("alpaca_demo", "sharegpt_demo"):
        specs.append(("qwen", dataset, 1024, {"neat_packing": True}))

    converters = {"alpaca_demo": (ALPACA, AlpacaDatasetConverter),
                  "sharegpt_demo": (SHAREGPT, SharegptDatasetConverter)}
    cases = []
    for template, dataset, cutoff, opts in specs:
        rows, conv_cls = converters[dataset]
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        data_args = DataArguments(template=template, cutoff_len=cutoff, dataset_dir=text_dir,
                                  dataset=[dataset], **opts)
        packing = data_args.packing  # neat_packing turns it on, and cutoff_len -= 1 with it
        tmpl = get_template_and_fix_tokenizer(tokenizer, data_args)
        attr = get_dataset_list([dataset], text_dir)[0]
        conv = conv_cls(attr, data_args)
        converted = [conv(dict({k: None for k in ("system", "history")}, **r)) for r in rows]
        batch = {k: [c[k] for c in converted] for k in converted[0]}
        cls = PackedSupervisedDatasetProcessor if packing else SupervisedDatasetProcessor
        proc = cls(template=tmpl, tokenizer=tokenizer, processor=None, data_args=data_args)
        out = proc.preprocess_dataset(batch)
        case = {"template": template, "dataset": dataset, "cutoff_len": cutoff, "packing": packing,
                "input_ids": out["input_ids"], "labels": out["labels"]}
        case.update({k: v for k, v in opts.items() if k != "packing"})
        if packing:
            case["position_ids"] = out["position_ids"]
            case["pad_token_id"] = tokenizer.pad_token_id
        if opts.get("neat_packing"):
            case["attention_mask"] = out["attention_mask"]
        cases.append(case)
        print(template, dataset, cutoff, opts, [len(x) for x in out["input_ids"]])
    with open(os.path.join(OUT, "data_expected.json"), "w") as f:
        json.dump({"llamafactory": llamafactory.__version__, "cases": cases}, f)


if __name__ == "__main__":
    main()
