use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

const PICKS: usize = 10_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn shares(balancer: &Balancer, candidates: &[Candidate], seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = vec![0usize; candidates.len()];
    for _ in 0..PICKS {
        counts[balancer.pick(candidates, &mut rng).expect("a pick")] += 1;
    }
    counts.iter().map(|&c| c as f64 / PICKS as f64).collect()
}

#[test]
fn weighted_random_follows_weights() {
    let candidates = [Candidate::new(3.0, 0, ms(1)), Candidate::new(1.0, 0, ms(1))];
    let got = shares(&Balancer::new(Strategy::Random), &candidates, 7);
    println!("random 3:1 shares: {got:?}");
    assert!((got[0] - 0.75).abs() < 0.05, "{got:?}");
    assert!((got[1] - 0.25).abs() < 0.05, "{got:?}");
}

#[test]
fn p2c_ewma_avoids_the_slow_candidate() {
    let candidates = [
        Candidate::new(1.0, 0, ms(10)),
        Candidate::new(1.0, 0, ms(1)),
    ];
    let got = shares(&Balancer::new(Strategy::P2cEwma), &candidates, 11);
    println!("p2c slow/fast shares: {got:?}");
    assert!(got[0] < 0.25, "slow candidate got {got:?}");
    assert!(got[1] > 0.75);
}

#[test]
fn p2c_ewma_accounts_for_outstanding_requests() {
    // Same latency; the busy one (9 in flight) costs 10×, so it loses every duel.
    let candidates = [
        Candidate::new(1.0, 9, ms(2)),
        Candidate::new(1.0, 0, ms(2)),
        Candidate::new(1.0, 0, ms(2)),
    ];
    let got = shares(&Balancer::new(Strategy::P2cEwma), &candidates, 3);
    println!("p2c busy/idle/idle shares: {got:?}");
    assert_eq!(got[0], 0.0);
    assert!((got[1] - 0.5).abs() < 0.05);
}

#[test]
fn least_outstanding_picks_the_minimum_and_spreads_ties() {
    let balancer = Balancer::new(Strategy::LeastOutstanding);
    let mut rng = StdRng::seed_from_u64(1);
    let candidates = [
        Candidate::new(1.0, 4, ms(1)),
        Candidate::new(1.0, 1, ms(1)),
        Candidate::new(1.0, 2, ms(1)),
    ];
    for _ in 0..100 {
        assert_eq!(balancer.pick(&candidates, &mut rng), Some(1));
    }
    let tied = [Candidate::new(1.0, 0, ms(1)), Candidate::new(1.0, 0, ms(1))];
    let got = shares(&balancer, &tied, 5);
    assert!((got[0] - 0.5).abs() < 0.05, "{got:?}");
    // Equal load: the heavier weight wins.
    let heavier = [Candidate::new(1.0, 0, ms(1)), Candidate::new(2.0, 0, ms(1))];
    assert_eq!(balancer.pick(&heavier, &mut rng), Some(1));
}

#[test]
fn round_robin_cycles_over_eligible_candidates() {
    let balancer = Balancer::new(Strategy::RoundRobin);
    let mut rng = StdRng::seed_from_u64(0);
    let candidates = [
        Candidate::new(1.0, 0, ms(1)),
        Candidate::new(0.0, 0, ms(1)),
        Candidate::new(5.0, 0, ms(1)),
        Candidate::new(1.0, 0, ms(1)),
    ];
    let picks: Vec<usize> = (0..6)
        .map(|_| balancer.pick(&candidates, &mut rng).unwrap())
        .collect();
    assert_eq!(picks, vec![0, 2, 3, 0, 2, 3]);
}

#[test]
fn empty_or_all_zero_gives_none_for_every_strategy() {
    let mut rng = StdRng::seed_from_u64(0);
    let zeros = [
        Candidate::new(0.0, 0, ms(1)),
        Candidate::new(f64::NAN, 0, ms(1)),
    ];
    for strategy in Strategy::ALL {
        let balancer = Balancer::new(strategy);
        assert_eq!(balancer.pick(&[], &mut rng), None, "{strategy}");
        assert_eq!(balancer.pick(&zeros, &mut rng), None, "{strategy}");
    }
}

#[test]
fn zero_weight_is_never_chosen() {
    let candidates = [
        Candidate::new(0.0, 0, Duration::ZERO),
        Candidate::new(1.0, 50, ms(100)),
        Candidate::new(-1.0, 0, Duration::ZERO),
    ];
    for strategy in Strategy::ALL {
        let got = shares(&Balancer::new(strategy), &candidates, 9);
        assert_eq!(got, vec![0.0, 1.0, 0.0], "{strategy}");
    }
}

#[test]
fn strategy_parses_and_serializes() {
    for strategy in Strategy::ALL {
        assert_eq!(strategy.to_string().parse::<Strategy>(), Ok(strategy));
        let yaml = serde_yaml_ng::to_string(&strategy).unwrap();
        assert_eq!(yaml.trim(), strategy.as_str());
        assert_eq!(
            serde_yaml_ng::from_str::<Strategy>(&yaml).unwrap(),
            strategy
        );
    }
    assert_eq!(" P2C_EWMA ".parse::<Strategy>(), Ok(Strategy::P2cEwma));
    assert_eq!(Strategy::default(), Strategy::P2cEwma);
    let err = "fastest".parse::<Strategy>().unwrap_err();
    assert!(err.to_string().contains("fastest"));
}

#[test]
fn effective_weight_combines_latency_errors_and_lag() {
    let healthy = LoadSignals {
        latency: ms(2),
        reference_latency: ms(2),
        ..LoadSignals::NEUTRAL
    };
    assert_eq!(effective_weight(10.0, &healthy), 10.0);
    let slow = LoadSignals {
        latency: ms(8),
        ..healthy
    };
    assert!((effective_weight(10.0, &slow) - 2.5).abs() < 1e-9);
    let flaky = LoadSignals {
        error_rate: 0.5,
        ..healthy
    };
    assert!((effective_weight(10.0, &flaky) - 5.0).abs() < 1e-9);
    let lagging = LoadSignals {
        lag: Duration::from_secs(10),
        max_lag: Duration::from_secs(10),
        ..healthy
    };
    assert!((effective_weight(10.0, &lagging) - 1.0).abs() < 1e-9);
    let hopeless = LoadSignals {
        error_rate: 1.0,
        ..slow
    };
    assert_eq!(effective_weight(10.0, &hopeless), 10.0 * MIN_HEALTH_FACTOR);
    let unknown = LoadSignals {
        error_rate: f64::NAN,
        ..healthy
    };
    assert_eq!(unknown.factor(), MIN_HEALTH_FACTOR);
    assert_eq!(effective_weight(0.0, &healthy), 0.0);
    assert_eq!(effective_weight(-3.0, &healthy), 0.0);
}

#[test]
fn ewma_decays_with_time() {
    let ewma = Ewma::new(Duration::from_secs(1));
    assert_eq!(ewma.get(), Duration::ZERO);
    let t0 = Instant::now();
    ewma.observe_at(ms(10), t0);
    assert_eq!(ewma.get(), ms(10));
    // One time constant later, the old value keeps weight 1/e.
    ewma.observe_at(ms(1), t0 + Duration::from_secs(1));
    let expected = 10.0 / std::f64::consts::E + 1.0 * (1.0 - 1.0 / std::f64::consts::E);
    assert!((ewma.get().as_secs_f64() * 1000.0 - expected).abs() < 1e-6);
    // A sample at the same instant carries no weight; a long gap forgets the past.
    let before = ewma.get();
    ewma.observe_at(ms(100), t0 + Duration::from_secs(1));
    assert_eq!(ewma.get(), before);
    ewma.observe_at(ms(1), t0 + Duration::from_secs(60));
    assert!((ewma.get().as_secs_f64() * 1000.0 - 1.0).abs() < 1e-6);
}

#[test]
fn in_flight_guard_counts_while_alive() {
    let counter = Arc::new(AtomicU32::new(0));
    let first = InFlight::enter(&counter);
    let second = InFlight::enter(&counter);
    assert_eq!(first.outstanding(), 2);
    drop(first);
    assert_eq!(second.outstanding(), 1);
    drop(second);
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn faded_ewma_lets_a_once_slow_endpoint_be_retried() {
    let e = Ewma::new(Duration::from_secs(1));
    let t0 = Instant::now();
    e.observe_at(Duration::from_millis(100), t0);
    assert_eq!(e.faded(t0), Duration::from_millis(100));
    let later = e.faded(t0 + Duration::from_secs(3));
    assert!(later < Duration::from_millis(6), "{later:?}");
    assert_eq!(
        e.get(),
        Duration::from_millis(100),
        "the average itself is unchanged"
    );
}
