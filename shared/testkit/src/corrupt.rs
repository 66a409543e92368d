//! A record set no client can decode, in a real partition: what a failing
//! disk, a broker bug or a codec the consumer lacks leaves behind.
//!
//! Apache Kafka refuses a corrupt batch at produce time (it decompresses to
//! validate), so on a broker from [`TestKafka::start_own`] a valid gzip
//! batch is produced and then damaged in its segment file, which the broker
//! serves as it is. The embedded broker does not decompress what it is
//! given, so there the damaged batch is produced directly, with a
//! hand-encoded Produce request.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::TestKafka;

/// Puts a gzip record set of `records` records whose compressed bytes are
/// garbage into `topic`'s `partition`; returns its first and last offsets.
pub async fn undecodable_batch(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    records: i32,
) -> (i64, i64) {
    assert!(records > 0);
    if TestKafka::is_real_broker() {
        let dir = kafka
            .partition_dir(topic, partition)
            .expect("an undecodable batch on Apache Kafka needs a broker of the test's own (TestKafka::start_own)");
        damaged_on_disk(kafka, topic, partition, records, dir).await
    } else {
        let (bootstrap, topic) = (kafka.bootstrap_servers().to_string(), topic.to_string());
        let first = tokio::task::spawn_blocking(move || {
            produce_raw(&bootstrap, &topic, partition, records)
        })
        .await
        .expect("the raw produce does not panic");
        (first, first + i64::from(records) - 1)
    }
}

/// Produces a real gzip batch, then overwrites its compressed bytes in the
/// partition's segment file.
async fn damaged_on_disk(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    records: i32,
    dir: std::path::PathBuf,
) -> (i64, i64) {
    let producer: FutureProducer = kafka
        .settings()
        .client_config()
        .set("compression.codec", "gzip")
        .set("linger.ms", "200")
        .set("acks", "all")
        .create()
        .expect("a producer");
    // Sent together, so the linger gathers them into one record set.
    let sends: Vec<_> = (0..records)
        .map(|i| {
            let body = format!(r#"{{"name":"lost-{i}","wait_ms":1}}"#);
            let producer = producer.clone();
            let topic = topic.to_string();
            tokio::spawn(async move {
                producer
                    .send(
                        FutureRecord::<(), _>::to(&topic)
                            .partition(partition)
                            .payload(&body),
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("the batch is produced")
                    .offset
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for send in sends {
        offsets.push(send.await.expect("the send does not panic"));
    }
    offsets.sort_unstable();
    producer.flush(Duration::from_secs(10)).expect("flushed");
    let (first, last) = (offsets[0], *offsets.last().unwrap());
    let segment = std::fs::read_dir(&dir)
        .expect("the partition's folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment file");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .expect("the segment opens");
    // Walk the batches (base offset, length) to the one holding `first`.
    let mut position = 0u64;
    loop {
        let mut header = [0u8; 12];
        file.seek(SeekFrom::Start(position)).unwrap();
        file.read_exact(&mut header)
            .unwrap_or_else(|e| panic!("no batch at offset {first} in {}: {e}", segment.display()));
        let base = i64::from_be_bytes(header[..8].try_into().unwrap());
        let length = u64::from(u32::from_be_bytes(header[8..].try_into().unwrap()));
        if base == first {
            // Past the 61-byte batch header: the gzip stream, magic first.
            let payload = length + 12 - 61;
            file.seek(SeekFrom::Start(position + 61)).unwrap();
            file.write_all(&vec![0xAB; payload as usize]).unwrap();
            file.sync_all().unwrap();
            return (first, last);
        }
        position += 12 + length;
    }
}

/// Sends one Produce request (v3) holding a v2 record batch marked gzip
/// whose body is not gzip; returns its base offset. Blocking.
fn produce_raw(bootstrap: &str, topic: &str, partition: i32, records: i32) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // base offset (the broker assigns it)
    batch.extend(0i32.to_be_bytes()); // length, filled in below
    batch.extend((-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(0u32.to_be_bytes()); // CRC: consumers check it only with check.crcs
    batch.extend(1i16.to_be_bytes()); // attributes: gzip
    batch.extend((records - 1).to_be_bytes()); // last offset delta
    batch.extend(now.to_be_bytes());
    batch.extend(now.to_be_bytes());
    batch.extend((-1i64).to_be_bytes()); // producer id
    batch.extend((-1i16).to_be_bytes()); // producer epoch
    batch.extend((-1i32).to_be_bytes()); // base sequence
    batch.extend(records.to_be_bytes());
    batch.extend([0xAB; 64]); // not a gzip stream
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());

    let mut request = Vec::new();
    request.extend(0i16.to_be_bytes()); // Produce
    request.extend(3i16.to_be_bytes()); // version 3
    request.extend(1i32.to_be_bytes()); // correlation id
    string(&mut request, "testkit");
    request.extend((-1i16).to_be_bytes()); // no transactional id
    request.extend((-1i16).to_be_bytes()); // acks: all
    request.extend(10_000i32.to_be_bytes());
    request.extend(1i32.to_be_bytes());
    string(&mut request, topic);
    request.extend(1i32.to_be_bytes());
    request.extend(partition.to_be_bytes());
    request.extend((batch.len() as i32).to_be_bytes());
    request.extend(&batch);

    let address = bootstrap.split(',').next().unwrap();
    let mut stream = std::net::TcpStream::connect(address).expect("the broker answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    // correlation id, one topic (its name), one partition: index, error, base offset.
    let mut at = 4 + 4;
    let name_length = i16::from_be_bytes(response[at..at + 2].try_into().unwrap()) as usize;
    at += 2 + name_length + 4 + 4;
    let error = i16::from_be_bytes(response[at..at + 2].try_into().unwrap());
    assert_eq!(error, 0, "the broker took the batch");
    i64::from_be_bytes(response[at + 2..at + 10].try_into().unwrap())
}

fn string(buffer: &mut Vec<u8>, text: &str) {
    buffer.extend((text.len() as i16).to_be_bytes());
    buffer.extend(text.as_bytes());
}
