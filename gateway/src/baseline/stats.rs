//! The numeric side of a baseline: running statistics over per-window feature vectors
//! (bytes, packets and new flows per window), kept with ndarray. Reads feature vectors,
//! writes nothing outside itself; `Profile` serialises it.
use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

/// Features of one window, in this order, in every vector of this module.
pub const FEATURES: [&str; FEATURE_COUNT] =
    ["tx_bytes", "tx_packets", "rx_bytes", "rx_packets", "new_flows", "distinct_hosts"];
pub const FEATURE_COUNT: usize = 6;

/// Index of each feature in a vector.
pub mod feature {
    pub const TX_BYTES: usize = 0;
    pub const TX_PACKETS: usize = 1;
    pub const RX_BYTES: usize = 2;
    pub const RX_PACKETS: usize = 3;
    pub const NEW_FLOWS: usize = 4;
    pub const DISTINCT_HOSTS: usize = 5;
}

/// How many windows the quantile reservoir keeps (the newest replace the oldest): close to
/// three hours of 10-second windows, and about 60 KB per device once stored as JSON.
pub const RESERVOIR_WINDOWS: usize = 1_024;

/// Weight of the newest window in the exponentially weighted moving average.
pub const EWMA_ALPHA: f64 = 0.1;

/// Running mean and variance (Welford), EWMA, maximum and a reservoir for quantiles of a
/// feature vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    pub count: u64,
    #[serde(with = "vector")]
    pub mean: Array1<f64>,
    /// Sum of squared deviations from the mean (Welford's M2).
    #[serde(with = "vector")]
    m2: Array1<f64>,
    #[serde(with = "vector")]
    pub ewma: Array1<f64>,
    #[serde(with = "vector")]
    pub max: Array1<f64>,
    /// The last `RESERVOIR_WINDOWS` vectors, one per row, in ring order.
    #[serde(with = "matrix")]
    reservoir: Array2<f64>,
    /// Next row of `reservoir` to overwrite once it is full.
    next_row: usize,
}

impl Default for RunningStats {
    fn default() -> Self {
        Self {
            count: 0,
            mean: Array1::zeros(FEATURE_COUNT),
            m2: Array1::zeros(FEATURE_COUNT),
            ewma: Array1::zeros(FEATURE_COUNT),
            max: Array1::zeros(FEATURE_COUNT),
            reservoir: Array2::zeros((0, FEATURE_COUNT)),
            next_row: 0,
        }
    }
}

impl RunningStats {
    /// Adds one window's feature vector.
    pub fn push(&mut self, x: &Array1<f64>) {
        self.count += 1;
        let delta = x - &self.mean;
        self.mean = &self.mean + &(&delta / self.count as f64);
        let delta2 = x - &self.mean;
        self.m2 = &self.m2 + &(&delta * &delta2);
        self.ewma = if self.count == 1 { x.clone() } else { &self.ewma * (1.0 - EWMA_ALPHA) + x * EWMA_ALPHA };
        self.max = self.max.iter().zip(x.iter()).map(|(m, v)| m.max(*v)).collect();
        if self.reservoir.nrows() < RESERVOIR_WINDOWS {
            // push_row only fails on a length mismatch; every vector here has FEATURE_COUNT.
            self.reservoir.push_row(x.view()).expect("feature vectors have FEATURE_COUNT entries");
        } else {
            self.reservoir.row_mut(self.next_row).assign(x);
            self.next_row = (self.next_row + 1) % RESERVOIR_WINDOWS;
        }
    }

    /// Sample standard deviation per feature (0 with fewer than two windows).
    pub fn std_dev(&self) -> Array1<f64> {
        if self.count < 2 {
            return Array1::zeros(FEATURE_COUNT);
        }
        (&self.m2 / (self.count - 1) as f64).mapv(f64::sqrt)
    }

    /// The `q` quantile (0..=1) per feature over the reservoir, by nearest rank.
    pub fn quantile(&self, q: f64) -> Array1<f64> {
        let rows = self.reservoir.nrows();
        if rows == 0 {
            return Array1::zeros(FEATURE_COUNT);
        }
        let rank = ((q.clamp(0.0, 1.0) * (rows - 1) as f64).round()) as usize;
        self.reservoir
            .axis_iter(Axis(1))
            .map(|column| {
                let mut values = column.to_vec();
                values.sort_by(f64::total_cmp);
                values[rank]
            })
            .collect()
    }

    /// Pools another device's statistics into these (for class baselines): exact for count,
    /// mean and variance (Chan et al.), maximum of maxima, reservoirs concatenated.
    pub fn merge(&mut self, other: &RunningStats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let (n_a, n_b) = (self.count as f64, other.count as f64);
        let n = n_a + n_b;
        let delta = &other.mean - &self.mean;
        self.mean = &self.mean + &(&delta * (n_b / n));
        self.m2 = &self.m2 + &other.m2 + &(&delta * &delta * (n_a * n_b / n));
        self.ewma = (&self.ewma * n_a + &other.ewma * n_b) / n;
        self.max = self.max.iter().zip(other.max.iter()).map(|(a, b)| a.max(*b)).collect();
        self.count += other.count;
        for row in other.reservoir.rows() {
            if self.reservoir.nrows() >= RESERVOIR_WINDOWS {
                break;
            }
            self.reservoir.push_row(row).expect("feature vectors have FEATURE_COUNT entries");
        }
    }
}

/// Serde for `Array1<f64>` as a plain list (ndarray's own serde feature is not enabled).
mod vector {
    use ndarray::Array1;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Array1<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.to_vec().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Array1<f64>, D::Error> {
        let v = Vec::<f64>::deserialize(d)?;
        if v.len() != super::FEATURE_COUNT {
            return Err(serde::de::Error::custom(format!(
                "expected {} features, found {}",
                super::FEATURE_COUNT,
                v.len()
            )));
        }
        Ok(Array1::from(v))
    }
}

/// Serde for the reservoir as a list of rows.
mod matrix {
    use ndarray::Array2;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &Array2<f64>, s: S) -> Result<S::Ok, S::Error> {
        m.rows().into_iter().map(|r| r.to_vec()).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Array2<f64>, D::Error> {
        let rows = Vec::<Vec<f64>>::deserialize(d)?;
        let count = rows.len();
        let flat: Vec<f64> = rows.into_iter().flatten().collect();
        Array2::from_shape_vec((count, super::FEATURE_COUNT), flat).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn vector(v: f64) -> Array1<f64> {
        Array1::from_elem(FEATURE_COUNT, v)
    }

    #[test]
    fn running_stats_match_the_closed_form() {
        let mut stats = RunningStats::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            stats.push(&vector(v));
        }
        assert!((stats.mean[0] - 5.0).abs() < 1e-9);
        // Sample variance of that series is 32/7.
        assert!((stats.std_dev()[0] - (32.0f64 / 7.0).sqrt()).abs() < 1e-9);
        assert_eq!(stats.max[0], 9.0);
        assert_eq!(stats.quantile(0.0)[0], 2.0);
        assert_eq!(stats.quantile(1.0)[0], 9.0);
        assert_eq!(stats.quantile(0.5)[0], 5.0);
    }

    #[test]
    fn merged_stats_equal_stats_of_the_union() {
        let (mut a, mut b, mut all) = (RunningStats::default(), RunningStats::default(), RunningStats::default());
        for v in [1.0, 2.0, 3.0] {
            a.push(&vector(v));
            all.push(&vector(v));
        }
        for v in [10.0, 20.0] {
            b.push(&vector(v));
            all.push(&vector(v));
        }
        a.merge(&b);
        assert_eq!(a.count, 5);
        assert!((a.mean[3] - all.mean[3]).abs() < 1e-9);
        assert!((a.std_dev()[3] - all.std_dev()[3]).abs() < 1e-9);
        assert_eq!(a.max, all.max);
    }
}
