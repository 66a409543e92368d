//! Dispatch instances share the reply traffic through their reply group:
//! four read about a quarter each, and an instance joining or leaving
//! while calls wait loses none of them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dispatch::{DispatchResponse, ReplyShare};
use serde_json::json;
use service_kit::RunningService;
use testkit::TestKafka;
use tokio_util::sync::CancellationToken;

use crate::{build_dispatch, start_waiter};

const PARTITIONS: i32 = 8;

struct Instance {
    url: String,
    share: ReplyShare,
    service: RunningService,
}

async fn instance(kafka: &TestKafka, topics: &protocol::topics::RequestTopics) -> Instance {
    let app = build_dispatch(kafka, topics, Duration::from_secs(30)).await;
    let share = app.reply_share();
    let service = RunningService::spawn_open(app).await;
    Instance {
        url: service.url(),
        share,
        service,
    }
}

/// Waits until `instances` split every partition between them, none
/// shared, each holding `PARTITIONS / instances` (the sticky assignor's
/// even split).
async fn split_evenly(instances: &[&Instance]) {
    let each = PARTITIONS as usize / instances.len();
    testkit::eventually(
        &format!(
            "{} instances own {each} reply partitions each",
            instances.len()
        ),
        Duration::from_secs(60),
        || async {
            let owned: Vec<Vec<i32>> = instances.iter().map(|i| i.share.partitions()).collect();
            let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
            let split = owned.iter().all(|p| p.len() == each) && all.len() == PARTITIONS as usize;
            split.then_some(())
        },
    )
    .await
    .unwrap();
}

/// Callers that keep calling the instances in `rotation` (a load
/// balancer's list) until stopped; every call must get its own reply.
struct Callers {
    rotation: Arc<Mutex<Vec<String>>>,
    answered: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Callers {
    fn start(urls: &[&str], callers: usize) -> Self {
        let rotation = Arc::new(Mutex::new(
            urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        ));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::new();
        let tasks = (0..callers)
            .map(|caller| {
                let (rotation, answered, stop, next, http) = (
                    rotation.clone(),
                    answered.clone(),
                    stop.clone(),
                    next.clone(),
                    http.clone(),
                );
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut call = 0;
                    while !stop.is_cancelled() {
                        call += 1;
                        let name = format!("caller-{caller}-{call}");
                        let url = {
                            let rotation = rotation.lock().unwrap();
                            rotation[next.fetch_add(1, Ordering::Relaxed) % rotation.len()].clone()
                        };
                        let sent = http
                            .post(format!("{url}/wait"))
                            .json(&json!({"name": name, "wait_ms": 150}))
                            .send()
                            .await;
                        let response = match sent {
                            // Taken out of rotation and closed between
                            // being picked and being reached: a load
                            // balancer tries the next instance.
                            Err(e) if e.is_connect() => continue,
                            Err(e) => {
                                failures.push(format!("{name} via {url}: {e}"));
                                continue;
                            }
                            Ok(response) => response,
                        };
                        let status = response.status();
                        match response.json::<DispatchResponse>().await {
                            Ok(body) if status == 200 && body.reply.name == name => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.push(format!("{name} via {url}: {status} {other:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self {
            rotation,
            answered,
            stop,
            tasks,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    async fn answer_more(&self, more: usize) {
        let target = self.answered() + more;
        testkit::eventually(
            &format!("{target} calls answered"),
            Duration::from_secs(60),
            || async { (self.answered() >= target).then_some(()) },
        )
        .await
        .unwrap();
    }

    fn add(&self, url: &str) {
        self.rotation.lock().unwrap().push(url.to_string());
    }

    fn remove(&self, url: &str) {
        self.rotation.lock().unwrap().retain(|u| u != url);
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.unwrap());
        }
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_instances_read_a_quarter_each_and_lose_no_call_as_one_joins_and_one_leaves() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = kafka.fresh_topics(PARTITIONS).await.unwrap();
    let waiter = start_waiter(&kafka, &topics).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(instance(&kafka, &topics).await);
    }
    // Four partitions' owners out of three instances: 3, 3, 2.
    testkit::eventually(
        "three instances split the reply partitions",
        Duration::from_secs(60),
        || async {
            let owned: Vec<Vec<i32>> = instances.iter().map(|i| i.share.partitions()).collect();
            let all: BTreeSet<i32> = owned.iter().flatten().copied().collect();
            let total: usize = owned.iter().map(Vec::len).sum();
            (owned.iter().all(|p| !p.is_empty()) && all.len() == 8 && total == 8).then_some(())
        },
    )
    .await
    .unwrap();
    let urls: Vec<&str> = instances.iter().map(|i| i.url.as_str()).collect();
    let callers = Callers::start(&urls, 12);
    callers.answer_more(50).await;

    // Scale out while calls wait: partitions move to the newcomer.
    instances.push(instance(&kafka, &topics).await);
    split_evenly(&instances.iter().collect::<Vec<_>>()).await;
    callers.add(&instances[3].url);
    callers.answer_more(100).await;

    // Four instances, each reading its own quarter and nothing else.
    let read_before: Vec<(u64, u64)> = instances
        .iter()
        .map(|i| (i.share.replies_read(), i.share.replies_for_others()))
        .collect();
    let answered_before = callers.answered();
    callers.answer_more(400).await;
    let read: Vec<u64> = instances
        .iter()
        .zip(&read_before)
        .map(|(i, (before, _))| i.share.replies_read() - before)
        .collect();
    let answered = callers.answered() - answered_before;
    let total: u64 = read.iter().sum();
    for (n, (instance, (_, others_before))) in instances.iter().zip(&read_before).enumerate() {
        let share = read[n] as f64 / total as f64;
        assert!(
            (0.15..=0.35).contains(&share),
            "instance {n} read {} of {total} replies ({share:.2}): {read:?}",
            read[n]
        );
        assert_eq!(
            instance.share.replies_for_others(),
            *others_before,
            "instance {n} read another instance's reply once the group had settled"
        );
    }
    // Every reply is read once, by its caller's instance, give or take the
    // calls that ended between the two snapshots.
    assert!(
        total as usize <= answered + 12 * 2,
        "{total} replies read for {answered} calls: some instance reads more than its own"
    );

    // Scale in: the leaving instance is taken out of rotation, answers the
    // calls it has in flight, and leaves; its partitions move.
    let leaving = instances.remove(0);
    callers.remove(&leaving.url);
    leaving
        .service
        .stop_within(Duration::from_secs(30))
        .await
        .unwrap();
    testkit::eventually(
        "three instances own every reply partition again",
        Duration::from_secs(60),
        || async {
            let all: BTreeSet<i32> = instances
                .iter()
                .flat_map(|i| i.share.partitions())
                .collect();
            (all.len() == PARTITIONS as usize).then_some(())
        },
    )
    .await
    .unwrap();
    callers.answer_more(100).await;

    let (answered, failures) = callers.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} calls failed through the scale-out and scale-in: {:?}",
        failures.len(),
        answered + failures.len(),
        &failures[..failures.len().min(5)]
    );
    for instance in instances {
        instance.service.stop().await.unwrap();
    }
    waiter.stop().await.unwrap();
}
