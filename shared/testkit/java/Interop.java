// A request/reply client built on the reference Kafka client and on Spring
// Kafka, the way performance engineers and Spring services call the
// waiter. The interop tests run it (`testkit::java`) against an unmodified
// waiter and read the one JSON line it prints on stdout:
//
//   java -cp 'lib/*' Interop.java plain  BOOTSTRAP REQUESTS REPLIES COUNT CODEC [transactional]
//   java -cp 'lib/*' Interop.java spring BOOTSTRAP REQUESTS REPLIES COUNT [REPLY_PARTITION]
//
// `plain` produces COUNT requests in one batch with compression CODEC
// (none, gzip, snappy, lz4, zstd) and the Go app's headers, and reads the
// replies by assignment; with `transactional` it also produces COUNT
// requests in a transaction it aborts, which must go unanswered. `spring`
// sends COUNT requests through a ReplyingKafkaTemplate listening on its own
// reply topic (on one partition when REPLY_PARTITION is given) and checks
// each reply's partition and key.

import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.requestreply.RequestReplyFuture;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.kafka.support.TopicPartitionOffset;

public class Interop {
    static final Duration REPLY_TIMEOUT = Duration.ofSeconds(60);

    public static void main(String[] args) {
        // Java 17's source launcher fails to print some exceptions thrown
        // out of main ("0 > -7"); print them here.
        try {
            run(args);
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(1);
        }
    }

    static void run(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: Interop plain|spring BOOTSTRAP REQUESTS REPLIES COUNT [...]");
            System.exit(2);
        }
        String mode = args[0];
        String bootstrap = args[1];
        String requests = args[2];
        String replies = args[3];
        int count = Integer.parseInt(args[4]);
        switch (mode) {
            case "plain" -> plain(bootstrap, requests, replies, count, args[5],
                    args.length > 6 && args[6].equals("transactional"));
            case "spring" -> spring(bootstrap, requests, replies, count,
                    args.length > 5 ? Integer.parseInt(args[5]) : -1);
            default -> {
                System.err.println("unknown mode " + mode);
                System.exit(2);
            }
        }
        System.exit(0);
    }

    static void plain(String bootstrap, String requests, String replies, int count, String codec,
            boolean transactional) throws Exception {
        Properties consumerProps = new Properties();
        consumerProps.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        Set<String> sent = new HashSet<>();
        Set<String> aborted = new HashSet<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(consumerProps)) {
            List<TopicPartition> partitions = consumer.partitionsFor(replies).stream()
                    .map(p -> new TopicPartition(replies, p.partition()))
                    .collect(Collectors.toList());
            consumer.assign(partitions);
            consumer.seekToEnd(partitions);
            // Resolve the positions now, so no reply is produced before them.
            partitions.forEach(consumer::position);

            Properties producerProps = new Properties();
            producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
            producerProps.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            // One batch of every request: what a batching producer sends.
            producerProps.put(ProducerConfig.LINGER_MS_CONFIG, "1000");
            producerProps.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(1 << 20));
            if (transactional) {
                producerProps.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "interop-" + UUID.randomUUID());
            }
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(producerProps)) {
                if (transactional) {
                    producer.initTransactions();
                    producer.beginTransaction();
                    send(producer, requests, replies, count, codec + "-aborted-", aborted);
                    producer.flush();
                    producer.abortTransaction();
                    producer.beginTransaction();
                }
                send(producer, requests, replies, count, codec + "-", sent);
                if (transactional) {
                    producer.commitTransaction();
                }
                producer.flush();
            }

            Set<String> answered = new HashSet<>();
            int duplicates = 0;
            int unexpected = 0;
            long deadline = System.nanoTime() + REPLY_TIMEOUT.toNanos();
            while (answered.size() < sent.size() && System.nanoTime() < deadline) {
                for (ConsumerRecord<String, String> reply : consumer.poll(Duration.ofMillis(200))) {
                    String correlation = header(reply, "correlation");
                    if (aborted.contains(correlation) || !sent.contains(correlation)) {
                        unexpected++;
                    } else if (!answered.add(correlation)) {
                        duplicates++;
                    }
                }
            }
            // Replies to aborted requests would come after the committed
            // ones' (the waiter reads in order); give them a moment anyway.
            for (ConsumerRecord<String, String> reply : consumer.poll(Duration.ofMillis(500))) {
                if (!sent.contains(header(reply, "correlation"))) {
                    unexpected++;
                }
            }
            System.out.printf(
                    "{\"mode\":\"plain\",\"codec\":\"%s\",\"sent\":%d,\"answered\":%d,\"duplicates\":%d,\"unexpected\":%d,\"aborted\":%d}%n",
                    codec, sent.size(), answered.size(), duplicates, unexpected, aborted.size());
        }
    }

    static void send(KafkaProducer<String, String> producer, String requests, String replies, int count,
            String prefix, Set<String> correlations) {
        for (int i = 0; i < count; i++) {
            String correlation = prefix + i + "-" + UUID.randomUUID();
            ProducerRecord<String, String> record = new ProducerRecord<>(requests, correlation,
                    "{\"name\":\"java-" + i + "\",\"wait_ms\":1}");
            record.headers().add("correlation", correlation.getBytes(StandardCharsets.UTF_8));
            record.headers().add("responseTopic", replies.getBytes(StandardCharsets.UTF_8));
            producer.send(record);
            correlations.add(correlation);
        }
    }

    static String header(ConsumerRecord<?, ?> record, String name) {
        Header header = record.headers().lastHeader(name);
        return header == null || header.value() == null ? null : new String(header.value(), StandardCharsets.UTF_8);
    }

    static void spring(String bootstrap, String requests, String replies, int count, int replyPartition)
            throws Exception {
        Map<String, Object> producerProps = new HashMap<>();
        producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
        Map<String, Object> consumerProps = new HashMap<>();
        consumerProps.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, "interop-spring-" + UUID.randomUUID());
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "latest");
        consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        consumerProps.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);

        ContainerProperties containerProps = replyPartition >= 0
                ? new ContainerProperties(new TopicPartitionOffset(replies, replyPartition,
                        TopicPartitionOffset.SeekPosition.END))
                : new ContainerProperties(replies);
        KafkaMessageListenerContainer<String, String> container = new KafkaMessageListenerContainer<>(
                new DefaultKafkaConsumerFactory<>(consumerProps), containerProps);
        ReplyingKafkaTemplate<String, String, String> template = new ReplyingKafkaTemplate<>(
                new DefaultKafkaProducerFactory<>(producerProps), container);
        template.setDefaultReplyTimeout(REPLY_TIMEOUT);
        template.start();
        try {
            if (!template.waitForAssignment(Duration.ofSeconds(60))) {
                System.err.println("the reply container was never assigned its partitions");
                System.exit(1);
            }
            List<RequestReplyFuture<String, String, String>> futures = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                ProducerRecord<String, String> record = new ProducerRecord<>(requests, "spring-key-" + i,
                        "{\"name\":\"spring-" + i + "\",\"wait_ms\":1}");
                if (replyPartition >= 0) {
                    record.headers().add(KafkaHeaders.REPLY_PARTITION,
                            ByteBuffer.allocate(4).putInt(replyPartition).array());
                }
                futures.add(template.sendAndReceive(record));
            }
            int answered = 0;
            int timedOut = 0;
            int wrongPartition = 0;
            int wrongKey = 0;
            for (int i = 0; i < futures.size(); i++) {
                try {
                    ConsumerRecord<String, String> reply = futures.get(i).get(REPLY_TIMEOUT.toSeconds() + 5,
                            TimeUnit.SECONDS);
                    answered++;
                    if (replyPartition >= 0 && reply.partition() != replyPartition) {
                        wrongPartition++;
                    }
                    if (!("spring-key-" + i).equals(reply.key())) {
                        wrongKey++;
                    }
                } catch (Exception e) {
                    timedOut++;
                }
            }
            System.out.printf(
                    "{\"mode\":\"spring\",\"sent\":%d,\"answered\":%d,\"timed_out\":%d,\"wrong_partition\":%d,\"wrong_key\":%d}%n",
                    count, answered, timedOut, wrongPartition, wrongKey);
        } finally {
            template.stop();
        }
    }
}
