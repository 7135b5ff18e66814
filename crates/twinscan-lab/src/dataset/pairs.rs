//! The study's balanced pairs.

use twinscan::tower::SplitMix64;

/// Two images of a data set and whether they share a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// First image index.
    pub a: usize,
    /// Second image index.
    pub b: usize,
    /// Same label.
    pub similar: bool,
}

/// `n` balanced pairs drawn from `labels` with `seed`: even positions are similar (both images
/// of one label, chosen uniformly among images, distinct where the class has two or more),
/// odd positions dissimilar (second image from any other label). Alternating keeps every prefix
/// and suffix balanced, so the study's "first 70% train, last 30% validate" split stays balanced.
/// Returns no pairs when the labels cannot make both kinds.
pub fn make_pairs(labels: &[u32], n: usize, seed: u64) -> Vec<Pair> {
    let mut by_label: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, l) in labels.iter().enumerate() {
        by_label.entry(*l).or_default().push(i);
    }
    if by_label.len() < 2 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|k| {
            let a = rng.below(labels.len());
            let la = labels[a];
            if k % 2 == 0 {
                let same = &by_label[&la];
                let mut b = same[rng.below(same.len())];
                while same.len() > 1 && b == a {
                    b = same[rng.below(same.len())];
                }
                Pair { a, b, similar: true }
            } else {
                let mut b = rng.below(labels.len());
                while labels[b] == la {
                    b = rng.below(labels.len());
                }
                Pair { a, b, similar: false }
            }
        })
        .collect()
}
