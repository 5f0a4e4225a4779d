//! LLaMA-Factory's dataset processors on aligned rows: supervised (sft: prompts masked, turns
//! truncated with `infer_seqlen`, `train_on_prompt`, `mask_history`, efficient_eos), pretraining
//! (pt: text + eos, truncated or concatenated into blocks), pairwise (rm / dpo: chosen and
//! rejected after one prompt) and feedback (kto: the answer and a mismatched KL answer).

use crate::convert::Aligned;
use crate::error::Result;
use crate::example::Example;
use crate::template::{Message, Template};
use crate::tokenizer::TextTokenizer;

/// LLaMA-Factory's `infer_seqlen`.
pub fn infer_seqlen(source: usize, target: usize, cutoff: usize) -> (usize, usize) {
    let max_target = if target * 2 < cutoff {
        cutoff
    } else if source * 2 < cutoff {
        cutoff - source
    } else {
        (cutoff as f64 * (target as f64 / (source + target) as f64)) as usize
    };
    let new_target = max_target.min(target);
    let new_source = cutoff.saturating_sub(new_target).min(source);
    (new_source, new_target)
}

/// LLaMA-Factory's `train_on_prompt` and `mask_history` (they exclude each other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Masking {
    /// Learn the prompts too (their labels are their ids).
    pub train_on_prompt: bool,
    /// Learn only the last answer; truncation keeps the last turns first; reasoning templates drop
    /// the thoughts of earlier answers.
    pub mask_history: bool,
}

fn messages_of(a: &Aligned, response: &Message) -> Vec<Message> {
    let mut m = a.prompt.clone();
    m.push(response.clone());
    m
}

/// Whether the supervised processor takes the row (`len(prompt) % 2 == 1 and len(response) == 1`).
pub fn supervised_ok(a: &Aligned) -> bool {
    a.prompt.len() % 2 == 1 && a.response.len() == 1
}

/// Whether the pairwise / feedback processors take the row.
pub fn pairwise_ok(a: &Aligned) -> bool {
    a.prompt.len() % 2 == 1 && a.response.len() >= 2
}

/// `SupervisedDatasetProcessor._encode_data_example`.
pub fn supervised(
    tok: &TextTokenizer,
    t: &Template,
    a: &Aligned,
    cutoff_len: usize,
    masking: Masking,
) -> Result<Example> {
    let messages = messages_of(a, &a.response[0]);
    let discard_cot = masking.mask_history && !t.preserve_thinking;
    let mut pairs = t.encode_multiturn(tok, &messages, &a.system, &a.tools, discard_cot)?;
    let eos = tok.eos_id.unwrap_or(0);
    let mut total = usize::from(t.efficient_eos);
    if masking.mask_history {
        pairs.reverse(); // the last turns have priority
    }
    let mut turns: Vec<(Vec<u32>, Vec<i64>)> = Vec::new();
    for (turn, (src, tgt)) in pairs.into_iter().enumerate() {
        if total >= cutoff_len {
            break;
        }
        let (sl, tl) = infer_seqlen(src.len(), tgt.len(), cutoff_len - total);
        total += sl + tl;
        let mut ids = src[..sl].to_vec();
        ids.extend(&tgt[..tl]);
        let mut lab: Vec<i64> = if masking.train_on_prompt {
            src[..sl].iter().map(|&x| x as i64).collect()
        } else if t.efficient_eos && turn != 0 && sl > 0 {
            // The eos that ends the previous answer is learned at the start of this prompt.
            let mut v = vec![eos as i64];
            v.extend(std::iter::repeat_n(-100, sl - 1));
            v
        } else {
            vec![-100; sl]
        };
        if masking.mask_history && turn != 0 {
            lab.extend(std::iter::repeat_n(-100i64, tl));
        } else {
            lab.extend(tgt[..tl].iter().map(|&x| x as i64));
        }
        turns.push((ids, lab));
    }
    if masking.mask_history {
        turns.reverse(); // back to conversation order
    }
    let mut e = Example::default();
    for (i, l) in turns {
        e.input_ids.extend(i);
        e.labels.extend(l);
    }
    if t.efficient_eos {
        e.input_ids.push(eos);
        e.labels.push(eos as i64);
    }
    Ok(e)
}

/// `PretrainDatasetProcessor`: each text + eos (llama3: `<|end_of_text|>`); without packing each
/// is truncated to cutoff_len (bos first when the tokenizer adds one), with packing all are
/// concatenated and cut into cutoff_len blocks (the rest dropped; bos replaces each block's first
/// token). Labels are the ids with the pad token ignored, as transformers'
/// `DataCollatorForLanguageModeling` makes them.
pub fn pretrain(
    tok: &TextTokenizer,
    template_name: &str,
    rows: &[Aligned],
    cutoff_len: usize,
    packing: bool,
) -> Result<Vec<Example>> {
    let eos = if template_name == "llama3" {
        "<|end_of_text|>".to_string()
    } else {
        tok.eos_token.clone().unwrap_or_default()
    };
    let texts: Vec<String> = rows
        .iter()
        .map(|a| {
            let content = a.prompt.first().map(|m| m.content.as_str()).unwrap_or("");
            format!("{content}{eos}")
        })
        .collect();
    let label = |ids: Vec<u32>| -> Example {
        let labels = ids
            .iter()
            .map(|&x| {
                if Some(x) == tok.pad_id {
                    -100
                } else {
                    x as i64
                }
            })
            .collect();
        Example {
            input_ids: ids,
            labels,
            ..Default::default()
        }
    };
    let bos = tok.add_bos_token.then(|| tok.bos_token.clone()).flatten();
    if !packing {
        return texts
            .iter()
            .map(|t| {
                let text = match &bos {
                    Some(b) => format!("{b}{t}"),
                    None => t.clone(),
                };
                let mut ids = tok.encode(&text)?;
                ids.truncate(cutoff_len);
                Ok(label(ids))
            })
            .collect();
    }
    let mut all = Vec::new();
    for t in &texts {
        all.extend(tok.encode(t)?);
    }
    let blocks = all.len() / cutoff_len.max(1);
    Ok((0..blocks)
        .map(|b| {
            let mut ids = all[b * cutoff_len..(b + 1) * cutoff_len].to_vec();
            if bos.is_some()
                && let (Some(first), Some(id)) = (ids.first_mut(), tok.bos_id)
            {
                *first = id;
            }
            label(ids)
        })
        .collect())
}

/// A chosen / rejected pair after one prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pair {
    pub chosen: Example,
    pub rejected: Example,
}

/// `PairwiseDatasetProcessor`: the prompt once, both answers truncated to one length.
pub fn pairwise(tok: &TextTokenizer, t: &Template, a: &Aligned, cutoff_len: usize) -> Result<Pair> {
    let (prompt, mut chosen) =
        t.encode_oneturn(tok, &messages_of(a, &a.response[0]), &a.system, &a.tools)?;
    let (_, mut rejected) =
        t.encode_oneturn(tok, &messages_of(a, &a.response[1]), &a.system, &a.tools)?;
    if t.efficient_eos {
        let eos = tok.eos_id.unwrap_or(0);
        chosen.push(eos);
        rejected.push(eos);
    }
    let (sl, tl) = infer_seqlen(prompt.len(), chosen.len().max(rejected.len()), cutoff_len);
    let side = |resp: &[u32]| -> Example {
        let resp = &resp[..tl.min(resp.len())];
        let mut input_ids = prompt[..sl].to_vec();
        input_ids.extend(resp);
        let mut labels = vec![-100i64; sl];
        labels.extend(resp.iter().map(|&x| x as i64));
        Example {
            input_ids,
            labels,
            ..Default::default()
        }
    };
    Ok(Pair {
        chosen: side(&chosen),
        rejected: side(&rejected),
    })
}

/// A KTO example: the answer, a mismatched answer for the KL term, and whether it is desirable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    pub example: Example,
    pub kl: Example,
    pub desirable: bool,
}

/// `FeedbackDatasetProcessor` over one `datasets.map` batch (LLaMA-Factory's
/// `preprocessing_batch_size`, 1000): each row's KL answer is the previous row's (the first takes
/// the last), rotated within the batch.
pub fn feedback(
    tok: &TextTokenizer,
    t: &Template,
    batch: &[Aligned],
    cutoff_len: usize,
) -> Result<Vec<Option<Feedback>>> {
    let n = batch.len();
    batch
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if !pairwise_ok(a) {
                return Ok(None);
            }
            let kl_resp = &batch[(i + n - 1) % n].response;
            let pick = |r: &[Message]| -> Message {
                match r.first() {
                    Some(m) if !m.content.is_empty() => m.clone(),
                    _ => r
                        .get(1)
                        .cloned()
                        .unwrap_or_else(|| Message::new(crate::template::Role::Assistant, "")),
                }
            };
            let desirable = !a.response[0].content.is_empty();
            let encode = |resp: Message| -> Result<Example> {
                let (p, mut r) =
                    t.encode_oneturn(tok, &messages_of(a, &resp), &a.system, &a.tools)?;
                if t.efficient_eos {
                    r.push(tok.eos_id.unwrap_or(0));
                }
                let (sl, tl) = infer_seqlen(p.len(), r.len(), cutoff_len);
                let mut input_ids = p[..sl].to_vec();
                input_ids.extend(&r[..tl]);
                let mut labels = vec![-100i64; sl];
                labels.extend(r[..tl].iter().map(|&x| x as i64));
                Ok(Example {
                    input_ids,
                    labels,
                    ..Default::default()
                })
            };
            Ok(Some(Feedback {
                example: encode(pick(&a.response))?,
                kl: encode(pick(kl_resp))?,
                desirable,
            }))
        })
        .collect()
}
