#!/usr/bin/env python3
"""Make lorafit-data's fixtures with LLaMA-Factory's own data pipeline (run by hand).

Needs torch, transformers (5.8), datasets (4.0), tokenizers and a LLaMA-Factory checkout installed
with `pip install --no-deps -e PATH` (main, ff6d4d1 used). For every case it runs LLaMA-Factory's
`get_template_and_fix_tokenizer` and `get_dataset` (reading dataset_info.json and the files through
`datasets`, converting, merging, and the stage's processor) exactly as `llamafactory-cli train` does,
and records what it produced. Writes under crates/lorafit-data/tests/fixtures/:

  tok/                 a byte-level BPE tokenizer trained here on the rows below (English and Chinese),
                       with every stop word and named token of the templates tested as special tokens
  data/                dataset_info.json entries shaped like LLaMA-Factory's demo datasets (identity,
                       alpaca_en/zh_demo, glaive_toolcall_en/zh_demo, c4_demo, wiki_demo, dpo_en/zh_demo,
                       kto_en_demo) and a csv, an openai-format and an alpaca-ranking dataset — small
                       files of our own in the same formats
  expected.json        per case: the keys, and LLaMA-Factory's input_ids / labels (chosen_*, rejected_*,
                       kl_* for pairwise / kto)

    python3 scripts/make_lf_data_fixtures.py
"""
import copy
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
import types
from datetime import datetime

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="lf-ds-cache-")
try:
    import torchaudio  # noqa: F401
except Exception:
    _ta = types.ModuleType("torchaudio")
    _ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = _ta

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, Seq2SeqTrainingArguments  # noqa: E402

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.data.template import TEMPLATES  # noqa: E402
from llamafactory.hparams import DataArguments, ModelArguments  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-data", "tests", "fixtures")

TEMPLATES_TESTED = [
    "qwen3", "qwen3_nothink", "qwen3_5", "qwen3_5_nothink", "qwen3_vl", "qwen3_vl_nothink", "qwen2_vl",
    "qwen", "llama2", "llama3", "llama4", "mistral", "mistral_small", "ministral3", "gemma", "gemma2", "gemma3",
    "glm4", "glm4_moe", "deepseek3", "deepseekr1", "phi4", "yi", "chatml", "gpt_oss", "default", "empty",
]
TOOL_FORMATS = {"default", "glm4", "glm4_moe", "llama3", "mistral", "qwen", "qwen3_5"}

WEATHER = {"name": "get_weather", "description": "Get the current weather of a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "description": "The city name"},
               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit"}},
               "required": ["city"]}}
RECIPE = {"name": "search_recipes", "description": "Search recipes by ingredients",
          "parameters": {"type": "object", "properties": {
              "ingredients": {"type": "array", "items": {"type": "string"}, "description": "What you have"}},
              "required": ["ingredients"]}}
STOCK = {"type": "function", "function": {"name": "股票价格", "description": "查询股票的当前价格",
                                          "parameters": {"type": "object", "properties": {
                                              "代码": {"type": "string", "description": "股票代码"}},
                                              "required": ["代码"]}}}

IDENTITY = [
    {"instruction": "hi", "input": "", "output": "Hello! I am {{name}}, an AI assistant developed by {{author}}."},
    {"instruction": "Who are you?", "input": "", "output": "I am {{name}}, an AI assistant developed by {{author}}."},
    {"instruction": "你好", "input": "", "output": "您好，我是 {{name}}，一个由 {{author}} 开发的 AI 助手。"},
]
ALPACA_EN = [
    {"instruction": "What is 2 + 3?", "input": "", "output": "2 + 3 = 5."},
    {"instruction": "Translate to French.", "input": "Good morning, my friend.", "output": "Bonjour, mon ami."},
    {"instruction": "And 10 - 4?", "input": "", "output": "10 - 4 = 6.", "system": "Be brief.",
     "history": [["What is 2 + 3?", "5."], ["Times 2?", "10."]]},
    {"instruction": "Explain why the sky is blue in detail, covering Rayleigh scattering.", "input": "",
     "output": "Sunlight scatters off air molecules; shorter blue wavelengths scatter much more strongly than red "
               "ones, so blue light reaches our eyes from every direction of the sky."},
]
ALPACA_ZH = [
    {"instruction": "用一句话介绍大语言模型微调。", "input": "", "output": "微调就是在预训练模型上用少量数据继续训练，让它适应新任务。"},
    {"instruction": "把下面的句子翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
    {"instruction": "解释一下什么是显存。", "input": "", "output": "显存是显卡上的内存，用来存放模型权重、激活值和优化器状态。"},
]
SHAREGPT = [
    {"conversations": [{"from": "system", "value": "You only answer in numbers."},
                       {"from": "human", "value": "How many legs does a spider have?"},
                       {"from": "gpt", "value": "8"},
                       {"from": "human", "value": "And a cat?"},
                       {"from": "gpt", "value": "4"}]},
    {"conversations": [{"from": "human", "value": "写一首关于秋天的短诗。"},
                       {"from": "gpt", "value": "<think>\n要短，要有秋意。\n</think>\n\n秋风起，落叶黄，一行大雁向南方。"}]},
    {"conversations": [{"from": "human", "value": "What is 6 times 7?"},
                       {"from": "gpt", "value": "<think>\nSix sevens.\n</think>\n\n42."},
                       {"from": "human", "value": "Half of that?"},
                       {"from": "gpt", "value": "<think>\n42 / 2.\n</think>\n\n21."},
                       {"from": "human", "value": "And plus one?"},
                       {"from": "gpt", "value": "22."}]},
    # LLaMA-Factory skips this one (two user turns in a row).
    {"conversations": [{"from": "human", "value": "One"}, {"from": "human", "value": "Two"}]},
]
GLAIVE_EN = [
    {"conversations": [
        {"from": "human", "value": "What is the weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": json.dumps({"temperature": 18.5, "condition": "cloudy"})},
        {"from": "gpt", "value": "It is 18.5 degrees and cloudy in Paris."}],
     "tools": json.dumps([WEATHER, RECIPE])},
    {"conversations": [
        {"from": "human", "value": "I have chicken and rice. Any recipe?"},
        {"from": "function_call", "value": json.dumps(
            {"name": "search_recipes", "arguments": {"ingredients": ["chicken", "rice"]}})},
        {"from": "observation", "value": json.dumps({"recipes": [{"name": "Chicken fried rice"}]})},
        {"from": "gpt", "value": "Try chicken fried rice."},
        {"from": "human", "value": "Thanks!"},
        {"from": "gpt", "value": "You're welcome."}],
     "tools": json.dumps([RECIPE])},
    {"conversations": [{"from": "human", "value": "Tell me a joke."},
                       {"from": "gpt", "value": "Why did the GPU overheat? Too many layers."}],
     "tools": "[]"},
]
GLAIVE_ZH = [
    {"conversations": [
        {"from": "human", "value": "帮我查一下 600519 的股价。"},
        {"from": "function_call", "value": json.dumps({"name": "股票价格", "arguments": {"代码": "600519"}},
                                                      ensure_ascii=False)},
        {"from": "observation", "value": json.dumps({"价格": 1688.0}, ensure_ascii=False)},
        {"from": "gpt", "value": "600519 当前价格是 1688.0 元。"}],
     "tools": json.dumps([STOCK], ensure_ascii=False)},
]
PARALLEL = [
    {"conversations": [
        {"from": "human", "value": "Weather in Paris and Rome?"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                       {"name": "get_weather", "arguments": {"city": "Rome",
                                                                                             "unit": "celsius"}}])},
        {"from": "observation", "value": "[{\"t\": 18}, {\"t\": 24}]"},
        {"from": "gpt", "value": "Paris 18, Rome 24."}],
     "tools": json.dumps([WEATHER])},
]
C4 = [{"text": "LoRA adds two small matrices to each linear layer and trains only those."},
      {"text": "Mixed precision keeps a float32 master copy of the weights when training in bfloat16."},
      {"text": "显存不够时，可以打开梯度检查点，用计算换显存。"}]
WIKI = ("Anarchism is a political philosophy.\n\nIt is sceptical of authority.\n"
        "大语言模型是一种神经网络。\n")
DPO_EN = [
    {"conversations": [{"from": "human", "value": "Name a prime number."}],
     "chosen": {"from": "gpt", "value": "7 is a prime number."},
     "rejected": {"from": "gpt", "value": "8."}},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                       {"from": "human", "value": "Explain LoRA in one line, thoroughly, with the low-rank idea."}],
     "chosen": {"from": "gpt", "value": "LoRA learns a low-rank update B·A to a frozen weight."},
     "rejected": {"from": "gpt", "value": "<think>\nhmm\n</think>\n\nNo idea."}},
]
DPO_ZH = [
    {"conversations": [{"from": "human", "value": "推荐一本书。"}],
     "chosen": {"from": "gpt", "value": "《三体》，一部很好的科幻小说。"},
     "rejected": {"from": "gpt", "value": "不知道。"}},
]
RANKING_ALPACA = [
    {"instruction": "Is 9 prime?", "input": "", "chosen": "No, 9 = 3 × 3.", "rejected": "Yes."},
    {"instruction": "Say hi", "input": "in French", "chosen": "Bonjour !", "rejected": "Hello."},
]
KTO_EN = [
    {"messages": [{"role": "user", "content": "Is the earth flat?"}, {"role": "assistant", "content": "No, it is round."}],
     "label": True},
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5"}], "label": False},
    {"messages": [{"role": "user", "content": "Capital of Italy?"}, {"role": "assistant", "content": "Rome."}],
     "label": True},
]
OPENAI = [
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                  {"role": "tool", "content": "{\"t\": -3}"},
                  {"role": "assistant", "content": "-3 degrees."}],
     "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]},
]
CSV = "instruction,input,output\nWhat is 1+1?,,2\n\"Say \"\"hi\"\"\",politely,\"Hello, nice to meet you.\"\n"

DATASET_INFO = {
    "identity": {"file_name": "identity.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json",
                       "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                   "system": "system", "history": "history"}},
    "alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json"},
    "sharegpt_demo": {"file_name": "sharegpt_demo.jsonl", "formatting": "sharegpt"},
    "glaive_toolcall_en_demo": {"file_name": "glaive_toolcall_en_demo.json", "formatting": "sharegpt",
                                "columns": {"messages": "conversations", "tools": "tools"}},
    "glaive_toolcall_zh_demo": {"file_name": "glaive_toolcall_zh_demo.json", "formatting": "sharegpt",
                                "columns": {"messages": "conversations", "tools": "tools"}},
    "parallel_tools_demo": {"file_name": "parallel_tools_demo.json", "formatting": "sharegpt",
                            "columns": {"messages": "conversations", "tools": "tools"}},
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
    "wiki_demo": {"file_name": "wiki_demo.txt", "columns": {"prompt": "text"}},
    "csv_demo": {"file_name": "csv_demo.csv"},
    "dpo_en_demo": {"file_name": "dpo_en_demo.json", "ranking": True, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "dpo_zh_demo": {"file_name": "dpo_zh_demo.json", "ranking": True, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "ranking_alpaca_demo": {"file_name": "ranking_alpaca_demo.json", "ranking": True,
                            "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                        "rejected": "rejected"}},
    "kto_en_demo": {"file_name": "kto_en_demo.json", "formatting": "sharegpt",
                    "columns": {"messages": "messages", "kto_tag": "label"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant"}},
    # num_samples: fewer rows than the file (a permutation's head) and more (repeats drawn).
    "alpaca_en_sampled": {"file_name": "alpaca_en_demo.json", "num_samples": 3,
                          "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                      "system": "system", "history": "history"}},
    "identity_x3": {"file_name": "identity.json", "num_samples": 8},
    "openai_demo": {"file_name": "openai_demo.jsonl", "formatting": "openai",
                    "columns": {"messages": "messages", "tools": "tools"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "observation_tag": "tool",
                             "function_tag": "function_call", "system_tag": "system"}},
}
FILES = {
    "identity.json": IDENTITY, "alpaca_en_demo.json": ALPACA_EN, "alpaca_zh_demo.json": ALPACA_ZH,
    "sharegpt_demo.jsonl": SHAREGPT, "glaive_toolcall_en_demo.json": GLAIVE_EN,
    "glaive_toolcall_zh_demo.json": GLAIVE_ZH, "parallel_tools_demo.json": PARALLEL, "c4_demo.jsonl": C4,
    "dpo_en_demo.json": DPO_EN, "dpo_zh_demo.json": DPO_ZH, "ranking_alpaca_demo.json": RANKING_ALPACA,
    "kto_en_demo.json": KTO_EN, "openai_demo.jsonl": OPENAI,
}


def specials():
    out = ["<s>", "</s>", "<|endoftext|>", "<|end_of_text|>"]
    for name in TEMPLATES_TESTED:
        t = TEMPLATES[name]
        out += list(t.stop_words)
        for f in (t.format_user, t.format_assistant, t.format_system, t.format_function, t.format_observation,
                  t.format_prefix):
            out += [s["token"] for s in f.slots if isinstance(s, dict)]
    seen = []
    for s in out:
        if s not in seen:
            seen.append(s)
    return seen


def corpus():
    texts = []
    for rows in FILES.values():
        texts.append(json.dumps(rows, ensure_ascii=False))
    texts += [WIKI, CSV]
    for name in TEMPLATES_TESTED:
        t = TEMPLATES[name]
        for f in (t.format_user, t.format_assistant, t.format_system, t.format_observation, t.format_prefix):
            texts += [s for s in f.slots if isinstance(s, str)]
        texts.append(t.default_system)
    return texts


def make_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials(),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() * 2, trainer)
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "model_max_length": 4096}, f, indent=1)


PRISTINE = None


def run_case(tok_dir, data_dir, case):
    # get_template_and_fix_tokenizer changes the registered template in place (default_system,
    # tool_format); a real run uses one template per process, so each case starts from a fresh copy.
    global PRISTINE
    if PRISTINE is None:
        PRISTINE = copy.deepcopy(TEMPLATES)
    TEMPLATES.clear()
    TEMPLATES.update(copy.deepcopy(PRISTINE))
    keys = dict(case)
    stage = keys.pop("stage")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    data_args = DataArguments(dataset_dir=data_dir, overwrite_cache=True, preprocessing_num_workers=None, **keys)
    if data_args.packing is None:  # as hparams/parser.py decides it
        data_args.packing = stage == "pt"
    model_args = ModelArguments(model_name_or_path=tok_dir)
    out_dir = tempfile.mkdtemp(prefix="lf-out-")
    training_args = Seq2SeqTrainingArguments(output_dir=out_dir, do_train=True, seed=42, report_to=[])
    transformers.set_seed(training_args.seed)  # as hparams/parser.py's get_train_args does
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    # Vision-language templates refuse to run without the model's processor; text-only rows never
    # reach it, so a stand-in with the few attributes the plugins read up front is passed.
    # (gemma3 reads its image strings up front; they only replace image placeholders).
    vision = types.SimpleNamespace(merge_size=2, patch_size=14, temporal_patch_size=2)
    processor = (types.SimpleNamespace(image_processor=vision, video_processor=vision, boi_token="<IMG?>",
                                       full_image_sequence="<IMG?>")
                 if template.mm_plugin.image_token is not None else None)
    module = get_dataset(template, model_args, data_args, training_args, stage, tokenizer, processor)
    shutil.rmtree(out_dir, ignore_errors=True)
    ds = module["train_dataset"]
    cols = [c for c in ds.column_names if c.endswith("input_ids") or c.endswith("labels") or c == "kto_tags"]
    if data_args.neat_packing:
        cols.append("attention_mask")
    if data_args.packing and stage == "sft":
        cols.append("position_ids")
    result = {c: list(ds[c]) for c in cols}
    result["pad_token_id"] = tokenizer.pad_token_id
    return result


# Packing happens within `datasets.map` batches of preprocessing_batch_size rows (pt: each batch's
# remainder dropped; sft: knapsacks per batch). `python3 scripts/make_lf_data_fixtures.py batch`
# appends just these to an existing expected.json.
BATCH_CASES = [
    {"stage": "pt", "dataset": "c4_demo,wiki_demo", "cutoff_len": 8, "preprocessing_batch_size": 2},
    {"stage": "pt", "template": "llama3", "dataset": "c4_demo,wiki_demo", "cutoff_len": 8, "packing": True,
     "preprocessing_batch_size": 3},
    {"stage": "sft", "template": "qwen3", "dataset": "alpaca_en_demo,alpaca_zh_demo", "cutoff_len": 1024,
     "packing": True, "preprocessing_batch_size": 2},
    {"stage": "sft", "template": "llama3", "dataset": "alpaca_en_demo,sharegpt_demo", "cutoff_len": 1024,
     "neat_packing": True, "preprocessing_batch_size": 3},
]


def cases():
    out = []
    chat = ["alpaca_en_demo", "alpaca_zh_demo", "sharegpt_demo", "identity"]
    for name in TEMPLATES_TESTED:
        t = TEMPLATES[name]
        for ds in chat:
            out.append({"stage": "sft", "template": name, "dataset": ds, "cutoff_len": 1024})
        out.append({"stage": "sft", "template": name, "dataset": "alpaca_en_demo", "cutoff_len": 24})
        if t.format_tools.tool_format in TOOL_FORMATS and t.format_function.tool_format in TOOL_FORMATS:
            for ds in ("glaive_toolcall_en_demo", "glaive_toolcall_zh_demo"):
                for cutoff in (1024, 40):
                    out.append({"stage": "sft", "template": name, "dataset": ds, "cutoff_len": cutoff})
            if t.format_function.tool_format != "glm4":
                out.append({"stage": "sft", "template": name, "dataset": "parallel_tools_demo", "cutoff_len": 1024})
    for name in ("qwen3", "qwen3_5", "deepseekr1", "gpt_oss", "glm4_moe"):
        out.append({"stage": "sft", "template": name, "dataset": "sharegpt_demo", "cutoff_len": 1024,
                    "enable_thinking": False})
        out.append({"stage": "sft", "template": name, "dataset": "sharegpt_demo", "cutoff_len": 1024,
                    "mask_history": True})
    for name in ("qwen3", "llama3"):
        out.append({"stage": "sft", "template": name, "dataset": "sharegpt_demo", "cutoff_len": 1024,
                    "train_on_prompt": True})
        out.append({"stage": "sft", "template": name, "dataset": "alpaca_en_demo,alpaca_zh_demo",
                    "cutoff_len": 1024, "packing": True})
        out.append({"stage": "sft", "template": name, "dataset": "alpaca_en_demo,sharegpt_demo", "cutoff_len": 1024,
                    "neat_packing": True})
    for mix in ("interleave_under", "interleave_over"):
        out.append({"stage": "sft", "template": "qwen3", "dataset": "alpaca_en_demo,alpaca_zh_demo,identity",
                    "cutoff_len": 1024, "mix_strategy": mix})
    out.append({"stage": "sft", "template": "qwen", "dataset": "glaive_toolcall_en_demo", "cutoff_len": 1024,
                "tool_format": "glm4_moe"})
    # num_samples (numpy's global generator, shared by the datasets in order) and interleave_probs
    # (numpy's default_rng choice through datasets).
    for ds in ("alpaca_en_sampled", "identity_x3", "alpaca_en_sampled,identity_x3,alpaca_zh_demo"):
        out.append({"stage": "sft", "template": "qwen3", "dataset": ds, "cutoff_len": 1024})
    for mix, ds, probs in (("interleave_under", "alpaca_en_demo,alpaca_zh_demo,identity", "0.2,0.3,0.5"),
                           ("interleave_over", "alpaca_en_demo,alpaca_zh_demo,identity", "0.2,0.3,0.5"),
                           ("interleave_over", "alpaca_en_demo,identity_x3", "0.7,0.3"),
                           ("interleave_under", "identity,alpaca_zh_demo", "0.5,0.5")):
        out.append({"stage": "sft", "template": "llama3", "dataset": ds, "cutoff_len": 1024, "mix_strategy": mix,
                    "interleave_probs": probs})
    # Tool formats whose own templates are not in TEMPLATES_TESTED, through `tool_format` on qwen.
    for fmt in ("gemma4", "lfm2", "ling", "minimax1", "minimax2", "seed_oss"):
        for ds in ("glaive_toolcall_en_demo", "glaive_toolcall_zh_demo", "parallel_tools_demo"):
            out.append({"stage": "sft", "template": "qwen", "dataset": ds, "cutoff_len": 1024, "tool_format": fmt})
    out.append({"stage": "sft", "template": "qwen3", "dataset": "alpaca_zh_demo", "cutoff_len": 1024,
                "default_system": "你是一个乐于助人的助手。"})
    out.append({"stage": "sft", "template": "qwen3", "dataset": "alpaca_en_demo", "cutoff_len": 1024,
                "max_samples": 2})
    for name in ("qwen3", "llama3", "default"):
        out.append({"stage": "sft", "template": name, "dataset": "csv_demo", "cutoff_len": 1024})
        out.append({"stage": "sft", "template": name, "dataset": "openai_demo", "cutoff_len": 1024})
    for name in (None, "qwen3", "llama3", "gemma3"):
        for ds in ("c4_demo", "wiki_demo", "c4_demo,wiki_demo"):
            for packing in (None, True, False):
                case = {"stage": "pt", "dataset": ds, "cutoff_len": 16}
                if name:
                    case["template"] = name
                if packing is not None:
                    case["packing"] = packing
                out.append(case)
    out += BATCH_CASES
    for name in ("qwen3", "qwen3_nothink", "llama3", "mistral", "gemma3", "glm4", "deepseekr1", "gpt_oss",
                 "chatml"):
        for ds in ("dpo_en_demo", "dpo_zh_demo", "ranking_alpaca_demo"):
            out.append({"stage": "rm", "template": name, "dataset": ds, "cutoff_len": 1024})
        out.append({"stage": "rm", "template": name, "dataset": "dpo_en_demo", "cutoff_len": 20})
    for name in ("qwen3", "llama3", "glm4"):
        out.append({"stage": "kto", "template": name, "dataset": "kto_en_demo", "cutoff_len": 1024})
    return out


def append_batch_cases():
    tok_dir, data_dir = os.path.join(OUT, "tok"), os.path.join(OUT, "data")
    path = os.path.join(OUT, "expected.json")
    with open(path) as f:
        fixture = json.load(f)
    have = [json.dumps(c["keys"], sort_keys=True) for c in fixture["cases"]]
    for case in BATCH_CASES:
        if json.dumps(case, sort_keys=True) in have:
            continue
        got = run_case(tok_dir, data_dir, case)
        fixture["cases"].append({"keys": case, "expected": got})
        print("ok ", case, len(got["input_ids"]))
    with open(path, "w") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")


def main():
    if sys.argv[1:2] == ["batch"]:
        append_batch_cases()
        return
    tok_dir = os.path.join(OUT, "tok")
    data_dir = os.path.join(OUT, "data")
    make_tokenizer(tok_dir)
    os.makedirs(data_dir, exist_ok=True)
    for name, rows in FILES.items():
        with open(os.path.join(data_dir, name), "w", encoding="utf-8") as f:
            if name.endswith(".jsonl"):
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                json.dump(rows, f, ensure_ascii=False, indent=1)
    with open(os.path.join(data_dir, "wiki_demo.txt"), "w", encoding="utf-8") as f:
        f.write(WIKI)
    with open(os.path.join(data_dir, "csv_demo.csv"), "w", encoding="utf-8") as f:
        f.write(CSV)
    with open(os.path.join(data_dir, "dataset_info.json"), "w") as f:
        json.dump(DATASET_INFO, f, indent=1, ensure_ascii=False)

    results = []
    for case in cases():
        try:
            got = run_case(tok_dir, data_dir, case)
            results.append({"keys": case, "expected": got})
            n = len(next(iter(v for k, v in got.items() if k.endswith("input_ids"))))
            print("ok ", case, n)
        except Exception as e:  # a case LLaMA-Factory itself refuses is recorded as such
            results.append({"keys": case, "error": f"{type(e).__name__}: {e}"})
            print("ERR", case, type(e).__name__, str(e)[:200])
    import llamafactory
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"llamafactory": llamafactory.__version__, "today": datetime.now().strftime("%d %b %Y"),
                   "cases": results}, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
