//! Where training is in the data: per-epoch seeded shuffling and the micro-batches of each
//! optimizer step.

/// Where training is in the data: which examples make which micro-batch of which step.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub batch_size: usize,
    pub grad_accum: usize,
    pub shuffle: bool,
    pub seed: u64,
    pub num_examples: usize,
}

impl Schedule {
    pub fn micro_batches_per_epoch(&self) -> usize {
        self.num_examples.div_ceil(self.batch_size)
    }

    /// Optimizer steps per epoch (the last one takes what is left, as transformers does).
    pub fn steps_per_epoch(&self) -> usize {
        self.micro_batches_per_epoch().div_ceil(self.grad_accum)
    }

    /// The order of examples in `epoch` (a seeded Fisher-Yates shuffle, or file order).
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_examples).collect();
        if self.shuffle {
            let mut rng = crate::rng::StepRng::new(self.seed, epoch as u64, u64::MAX);
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The micro-batches (lists of example indices) of global step `step` (0-based).
    pub fn step_batches(&self, step: usize) -> Vec<Vec<usize>> {
        let spe = self.steps_per_epoch();
        let (epoch, within) = (step / spe, step % spe);
        let order = self.epoch_order(epoch);
        let micro: Vec<&[usize]> = order.chunks(self.batch_size).collect();
        micro
            .iter()
            .skip(within * self.grad_accum)
            .take(self.grad_accum)
            .map(|m| m.to_vec())
            .collect()
    }
}

impl Schedule {
    /// Every micro-batch of `epoch`, in order.
    pub fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        self.epoch_order(epoch)
            .chunks(self.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }
}
