//! Audio: Qwen2-Audio's and Gemma 4's audio tokens against LLaMA-Factory's plugin and
//! transformers' processor (`scripts/make_audio_fixtures.py`), Qwen2-Audio's parameters, and
//! what an estimate does with audios.

use super::{est, settings, tower};
use lorafit_core::arch::media::{self, AudioFile};
use lorafit_core::arch::vision::AudioKind;
use lorafit_core::estimate;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../fixtures/audio_tokens.json")).expect("fixture")
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("fixture: {k}"))
}

#[test]
fn audio_tokens_equal_llamafactory_and_transformers() {
    let fx = fixture();
    let qwen = tower("Qwen/Qwen2-Audio-7B");
    let gemma = tower("google/gemma-4-E4B-it");
    let omni = tower("Qwen/Qwen2.5-Omni-7B");
    assert_eq!(
        qwen.audio.map(|a| (a.kind, a.positions)),
        Some((AudioKind::Qwen2Audio, 1500))
    );
    assert_eq!(
        gemma.audio.map(|a| (a.kind, a.positions)),
        Some((AudioKind::Gemma4, 750))
    );
    // Waveforms of chosen lengths at 16 kHz: around the hop, the strides and the 30 s and
    // 300 s windows.
    let lengths = fx["lengths"].as_array().expect("lengths");
    assert_eq!(lengths.len(), 31);
    for c in lengths {
        let s = n(c, "samples_16k");
        // Qwen2.5-Omni: the same arithmetic over 300 s; its encoder runs over the valid frames.
        let o = media::qwen2_omni_audio_tokens(s);
        assert_eq!(o.pads, n(c, "qwen2_omni_pads"), "{s}");
        assert!(
            o.positions >= 2 * o.pads && o.positions <= 15_000,
            "{s}: {o:?}"
        );
        assert_eq!(
            media::qwen2_audio_tokens(s, 1500).pads,
            n(c, "qwen2_audio_pads"),
            "{s}"
        );
        assert_eq!(
            media::gemma4_audio_tokens(s, 750).pads,
            n(c, "gemma4_tokens"),
            "{s}"
        );
    }
    // Real files: decoded length and rate → LLaMA-Factory's resampling → tokens; bos / eos
    // around the pads.
    for c in fx["files"].as_array().expect("files") {
        let name = c["file"].as_str().expect("fixture");
        let file = AudioFile {
            samples: n(c, "samples"),
            rate: n(c, "rate"),
        };
        assert_eq!(file.resampled(16000), n(c, "samples_16k"), "{name}");
        let q = qwen.audio_tokens(Some(&file), 0.0, 16000).expect("audio");
        assert_eq!(q.pads, n(c, "qwen2_audio_pads"), "{name}");
        assert_eq!(c["qwen2_audio_text"], "<|audio_bos|><|audio_eos|>");
        assert_eq!(q.text_tokens, 2);
        let o = omni.audio_tokens(Some(&file), 0.0, 16000).expect("audio");
        assert_eq!(o.pads, n(c, "qwen2_omni_pads"), "{name}");
        let g = gemma.audio_tokens(Some(&file), 0.0, 16000).expect("audio");
        assert_eq!(g.pads, n(c, "gemma4_tokens"), "{name}");
    }
    // Models without an audio encoder have no audio tokens.
    assert!(
        tower("Qwen/Qwen2.5-VL-7B-Instruct")
            .audio_tokens(None, 10.0, 16000)
            .is_none()
    );
}

#[test]
fn qwen2_audio_counts_as_published_and_reads_sparse_configs() {
    // 8,397,094,912 as transformers 5.8 builds it (the catalog test checks it against
    // transformers itself): Qwen2-7B's language model with a 156,032-token table, and 642 M of
    // Whisper-large-v3's encoder (637 M) + the projector.
    let a = lorafit_core::catalog::find_model("Qwen/Qwen2-Audio-7B-Instruct")
        .expect("catalog")
        .arch()
        .expect("arch");
    assert_eq!(a.total_params(), 8_397_094_912);
    assert_eq!(a.vision_params(), 642_215_936);
    // The hub config leaves most of text_config and all of audio_config to transformers'
    // defaults: the same model.
    let sparse = r#"{"model_type": "qwen2_audio", "text_config": {"model_type": "qwen2", "intermediate_size": 11008, "vocab_size": 156032}}"#;
    let b = lorafit_core::arch::ModelArch::from_config_json(sparse).expect("parses");
    assert_eq!(b.total_params(), a.total_params());
    // A broken audio_config is a clear error.
    let bad = r#"{"model_type": "qwen2_audio", "audio_config": {"d_model": "wide"}, "text_config": {"model_type": "qwen2"}}"#;
    let e = lorafit_core::arch::ModelArch::from_config_json(bad).expect_err("bad");
    assert!(
        e.to_string().contains("audio_config") && e.to_string().contains("d_model"),
        "{e}"
    );
}

#[test]
fn audios_take_their_tokens_and_wrong_inputs_are_errors() {
    let base = "model_name_or_path: Qwen/Qwen2-Audio-7B-Instruct\nfinetuning_type: lora\ncutoff_len: 2048\n";
    // Two 20 s audios: 320 000 samples → 2000 frames → 1000 → 500 pads + bos / eos each.
    let e = est(&format!("{base}audios_per_sample: 2\naudio_seconds: 20\n"));
    let v = e.vision.as_ref().expect("vision");
    assert_eq!((v.audios_per_sample, v.audio_tokens_per_sample), (2, 1004));
    assert!(!v.takes_images && v.has_audio);
    assert!(
        e.warnings.iter().any(|w| w.contains("assumed 20 s long")),
        "{:?}",
        e.warnings
    );
    // A longer audio is cut to 30 s: 750 pads.
    let long = est(&format!("{base}audios_per_sample: 1\naudio_seconds: 95\n"));
    assert_eq!(long.vision.expect("vision").audio_tokens_per_sample, 752);
    // Training the encoder saves its activations over all 1500 positions of each audio.
    let trained = est(&format!(
        "{base}audios_per_sample: 2\naudio_seconds: 20\nfreeze_vision_tower: false\n"
    ));
    assert!(trained.breakdown.activations > e.breakdown.activations);
    assert!(trained.trainable_params > e.trainable_params);
    // And the encoder's FLOPs are per position, not per image patch.
    assert!(e.flops_per_token > est(base).flops_per_token);
    let err = |yaml: &str| {
        let plan = settings(yaml).plan().expect("plan");
        let (arch, src) = estimate::resolve_model(&plan, None).expect("model");
        estimate::estimate(&arch, src, &plan)
            .expect_err("error")
            .to_string()
    };
    let e = err(&format!("{base}images_per_sample: 1\n"));
    assert!(e.contains("audio only"), "{e}");
    let e = err(&format!(
        "{base}audios_per_sample: 1\naudio_sampling_rate: 22050\n"
    ));
    assert!(
        e.contains("audio_sampling_rate 22050") && e.contains("16000"),
        "{e}"
    );
    let short = base.replace("cutoff_len: 2048", "cutoff_len: 1024");
    let e = err(&format!("{short}audios_per_sample: 4\naudio_seconds: 30\n"));
    assert!(e.contains("4 audio(s) per sample = 3008 tokens"), "{e}");
    let e = err("model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\naudios_per_sample: 1\n");
    assert!(e.contains("no audio encoder"), "{e}");
    let e = err("model_name_or_path: Qwen/Qwen3-4B\naudios_per_sample: 1\n");
    assert!(e.contains("no audio encoder"), "{e}");
    // Gemma 4 E4B takes audio beside images; LLaMA-Factory's plugin gets its count wrong.
    let g = est(
        "model_name_or_path: google/gemma-4-E4B-it\nfinetuning_type: lora\naudios_per_sample: 1\naudio_seconds: 10\nimages_per_sample: 1\n",
    );
    let v = g.vision.as_ref().expect("vision");
    assert_eq!(v.audio_tokens_per_sample, 250 + 2);
    assert!(v.takes_images && v.image_tokens_per_sample > 0);
    assert!(
        g.warnings
            .iter()
            .any(|w| w.contains("counts the audio file's path")),
        "{:?}",
        g.warnings
    );
}

#[test]
fn qwen2_5_omni_trains_its_thinker_with_images_and_long_audio() {
    // LLaMA-Factory trains `model.thinker`: Qwen2.5-7B's language model, Qwen2.5-VL-7B's tower
    // and a Whisper-style encoder with its own projection (8,931,813,888 as transformers 5.8
    // builds the thinker; the catalog test checks it against transformers).
    let a = lorafit_core::catalog::find_model("Qwen/Qwen2.5-Omni-7B")
        .expect("catalog")
        .arch()
        .expect("arch");
    assert_eq!(a.total_params(), 8_931_813_888);
    assert_eq!(a.model_type, "qwen2");
    let vl = tower("Qwen/Qwen2.5-VL-7B-Instruct");
    let omni = a.vision.as_ref().expect("tower");
    // Images go through Qwen2.5-VL's processor: the same tokens for the same image.
    let keys = lorafit_core::arch::media::ImageKeys::default();
    assert_eq!(
        omni.sized_image_tokens(1280, 720, &keys),
        vl.sized_image_tokens(1280, 720, &keys)
    );
    let base = "model_name_or_path: Qwen/Qwen2.5-Omni-7B\nfinetuning_type: lora\ncutoff_len: 16384\nimages_per_sample: 1\n";
    // A 120 s audio: 12 000 mel frames → 6000 encoder positions → 3000 pads + start / end (a
    // 30 s window would have cut it to 750).
    let e = est(&format!("{base}audios_per_sample: 1\naudio_seconds: 120\n"));
    let v = e.vision.as_ref().expect("vision");
    assert_eq!(v.audio_tokens_per_sample, 3002);
    assert!(v.takes_images && v.image_tokens_per_sample > 0);
    // The encoder's FLOPs follow the audio's length (it runs over valid frames only).
    let short = est(&format!("{base}audios_per_sample: 1\naudio_seconds: 30\n"));
    assert!(e.flops_per_token > short.flops_per_token);
    // Pre-quantized thinkers are QLoRA-like.
    let awq = est("model_name_or_path: Qwen/Qwen2.5-Omni-7B-AWQ\nfinetuning_type: lora\n");
    let dense = est("model_name_or_path: Qwen/Qwen2.5-Omni-7B\nfinetuning_type: lora\n");
    assert!(awq.breakdown.weights < dense.breakdown.weights);
    // A config without its thinker is a clear error.
    let e = lorafit_core::arch::ModelArch::from_config_json(r#"{"model_type": "qwen2_5_omni"}"#)
        .expect_err("no thinker");
    assert!(e.to_string().contains("thinker_config"), "{e}");
}
