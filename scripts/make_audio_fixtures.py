"""Audio files and the audio tokens LLaMA-Factory expands them to, for lorafit's audio readers
(crates/lorafit-data/src/media.rs) and audio token counts (crates/lorafit-core/src/arch/media.rs).

    python3 scripts/make_audio_fixtures.py /path/to/LLaMA-Factory

1. Writes short WAV (16-bit, 24-bit extensible, float), FLAC, MP3 (MPEG-1, -2 and -2.5 rates,
   CBR and VBR, LAME's gapless header) and Ogg Opus files with PyAV to
   crates/lorafit-data/tests/fixtures/audio/ and records what FFmpeg's decoders give for each
   (samples per channel, rate): what torchaudio.load returns to LLaMA-Factory (torchaudio >= 2.9
   loads through torchcodec, which decodes with FFmpeg as PyAV does; without torchcodec this script
   gives torchaudio.load PyAV's decoder).
2. Runs LLaMA-Factory's own `qwen2_audio` plugin (transformers' WhisperFeatureExtractor as
   Qwen2-Audio ships it: 128 mel bins, 30 s) on each file and on silent waveforms of chosen
   lengths, and counts the `<|AUDIO|>` tokens and the text around them; the same with the
   `qwen2_omni` plugin (Qwen2.5-Omni: a 300 s window); and Gemma 4's
   `Gemma4Processor._compute_audio_num_tokens` (audio_seq_length 750) on the same waveforms.
   Writes crates/lorafit-core/tests/fixtures/audio_tokens.json.

needs: LLaMA-Factory (editable install), transformers 5.8, av, numpy, torchaudio (its
functional.resample; the pure-Python source of the wheel is enough when the wheel's torch pin does
not match: `pip download torchaudio==2.11.1 --no-deps` and put the unzipped folder on PYTHONPATH).
"""

import json
import os
import sys
import types

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_FILES = os.path.join(ROOT, "crates/lorafit-data/tests/fixtures/audio")
OUT_TOKENS = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures/audio_tokens.json")

# (file, codec, container format, sample rate, channels, seconds, codec options)
FILES = [
    ("mono16k.wav", "pcm_s16le", "wav", 16000, 1, 0.6, {}),
    ("stereo44k.wav", "pcm_s16le", "wav", 44100, 2, 0.2, {}),
    ("s24_48k.wav", "pcm_s24le", "wav", 48000, 3, 0.12, {}),
    ("float22k.wav", "pcm_f32le", "wav", 22050, 1, 0.3, {}),
    ("mono16k.flac", "flac", "flac", 16000, 1, 2.1, {}),
    ("stereo44k.flac", "flac", "flac", 44100, 2, 0.9, {}),
    ("cbr44k.mp3", "libmp3lame", "mp3", 44100, 2, 1.7, {"b": "32k"}),
    ("cbr48k.mp3", "libmp3lame", "mp3", 48000, 1, 0.8, {"b": "32k"}),
    ("mpeg2_22k.mp3", "libmp3lame", "mp3", 22050, 1, 1.1, {"b": "16k"}),
    ("mpeg25_8k.mp3", "libmp3lame", "mp3", 8000, 1, 1.45, {"b": "8k"}),
    ("vbr16k.mp3", "libmp3lame", "mp3", 16000, 1, 2.6, {"q": "7"}),
    ("speech.opus", "libopus", "ogg", 48000, 1, 1.25, {"b": "12k"}),
]
# Silent waveforms at 16 kHz: around the mel hop (160), Gemma 4's conv strides (640 samples a
# token), Qwen2-Audio's pooling (640), Whisper's 30 s window (480 000) and Qwen2.5-Omni's 300 s
# (4 800 000).
LENGTHS = sorted(
    {1, 159, 160, 161, 320, 479, 480, 481, 639, 640, 641, 1000, 1599, 1600, 1601, 16000, 16001,
     46421, 93680, 159999, 160000, 479840, 479999, 480000, 480001, 800000, 960000,
     4_799_999, 4_800_000, 4_800_161, 6_400_000}
)


def write_audio(path, codec, fmt, rate, channels, seconds, options):
    layout = {1: "mono", 2: "stereo", 3: "2.1"}[channels]
    c = av.open(path, "w", format=fmt)
    s = c.add_stream(codec, rate=rate, layout=layout)
    s.options = {k: v for k, v in options.items() if k != "b"}
    if "b" in options:
        s.bit_rate = int(options["b"].rstrip("k")) * 1000
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt_name = s.codec_context.format.name
    planar = fmt_name.endswith("p")
    data = np.stack([wave] * channels)
    if fmt_name.startswith("s16"):
        data = (data * 32767).astype(np.int16)
    elif fmt_name.startswith("s32"):
        data = (data * 2147483647).astype(np.int32)
    if not planar:
        data = data.T.reshape(1, -1)
    step = 1024
    for i in range(0, n, step):
        chunk = data[:, i : i + step] if planar else data[:, i * channels : (i + step) * channels]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt_name, layout=layout)
        frame.sample_rate = rate
        for p in s.encode(frame):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return n


def decode(path):
    """FFmpeg's decoded samples per channel and the stream's rate (what torchcodec returns)."""
    c = av.open(path)
    s = c.streams.audio[0]
    chunks = []
    for f in c.decode(s):
        x = f.to_ndarray().astype(np.float32)
        ch = len(f.layout.channels)
        # planar formats: [channels, samples]; packed: [1, samples * channels] interleaved
        chunks.append(x if x.shape[0] == ch and f.format.is_planar else x.reshape(-1, ch).T)
    rate = s.rate
    c.close()
    return np.concatenate(chunks, axis=1), rate


def pyav_load(uri, *args, **kwargs):
    wave, rate = decode(str(uri))
    return torch.from_numpy(wave), rate


def main():
    sys.path.insert(0, os.path.join(sys.argv[1], "src"))
    try:
        import torchcodec  # noqa: F401
    except Exception:
        torchaudio.load = pyav_load
    from llamafactory.data.mm_plugin import get_mm_plugin
    from transformers import WhisperFeatureExtractor
    from transformers.models.gemma4.processing_gemma4 import Gemma4Processor

    qwen = types.SimpleNamespace(
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
        audio_sampling_rate=16000,
    )
    plugin = get_mm_plugin("qwen2_audio", audio_token="<|AUDIO|>")
    gemma = types.SimpleNamespace(audio_seq_length=750)

    def qwen2_audio(audio):
        msgs = [{"role": "user", "content": "<audio>hi"}]
        text = plugin.process_messages(msgs, [], [], [audio], qwen)[0]["content"]
        pads = text.count("<|AUDIO|>")
        return {"pads": pads, "text": text.replace("<|AUDIO|>", "").replace("hi", "")}

    def gemma4(wave):
        return Gemma4Processor._compute_audio_num_tokens(gemma, wave, 16000)

    # Qwen2.5-Omni: LLaMA-Factory's `qwen2_omni` plugin with the feature extractor the hub repo
    # ships (WhisperFeatureExtractor, 128 mel bins, a 300 s window).
    omni = types.SimpleNamespace(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, chunk_length=300),
        image_processor=types.SimpleNamespace(merge_size=2),
        audio_sampling_rate=16000,
    )
    omni_plugin = get_mm_plugin(
        "qwen2_omni", image_token="<|IMAGE|>", video_token="<|VIDEO|>", audio_token="<|AUDIO|>"
    )

    def qwen2_omni(wave):
        msgs = [{"role": "user", "content": "<audio>hi"}]
        text = omni_plugin.process_messages(msgs, [], [], [wave], omni)[0]["content"]
        return text.count("<|AUDIO|>"), text.replace("<|AUDIO|>", "").replace("hi", "")

    os.makedirs(OUT_FILES, exist_ok=True)
    files = []
    for name, codec, fmt, rate, ch, sec, opts in FILES:
        path = os.path.join(OUT_FILES, name)
        written = write_audio(path, codec, fmt, rate, ch, sec, opts)
        wave, decoded_rate = decode(path)
        resampled = plugin._regularize_audios([path], sampling_rate=16000)["audios"][0]
        q = qwen2_audio(path)
        files.append({
            "file": name,
            "written_samples": written,
            "samples": int(wave.shape[1]),
            "rate": int(decoded_rate),
            "channels": int(wave.shape[0]),
            "samples_16k": int(resampled.shape[0]),
            "qwen2_audio_pads": q["pads"],
            "qwen2_audio_text": q["text"],
            "gemma4_tokens": gemma4(resampled),
            "qwen2_omni_pads": qwen2_omni(resampled)[0],
        })
        print(files[-1])
    lengths = []
    for n in LENGTHS:
        wave = np.zeros(n, dtype=np.float32)
        q = qwen2_audio(wave)
        o_pads, o_text = qwen2_omni(wave)
        assert o_text == "<|audio_start|><|audio_end|>", o_text
        lengths.append({
            "samples_16k": n,
            "qwen2_audio_pads": q["pads"],
            "gemma4_tokens": gemma4(wave),
            "qwen2_omni_pads": o_pads,
        })
    out = {
        "source": "LLaMA-Factory ff6d4d1 qwen2_audio plugin + transformers 5.8 WhisperFeatureExtractor(feature_size=128); "
        "qwen2_omni plugin + WhisperFeatureExtractor(feature_size=128, chunk_length=300); "
        "Gemma4Processor._compute_audio_num_tokens(audio_seq_length=750); FFmpeg (PyAV 18.1) decoding, torchaudio 2.11 resample",
        "files": files,
        "lengths": lengths,
    }
    with open(OUT_TOKENS, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
