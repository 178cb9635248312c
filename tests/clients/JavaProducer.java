// A Java KafkaProducer for kpd's Kafka listener (tests/integration/test_kafka_listener_clients.py).
//
// Usage: java -cp <classes>:kafka-clients.jar:slf4j-api.jar JavaProducer BOOTSTRAP TOPIC COUNT
// KEYS CHUNK [KEY=VALUE producer settings...]. Sends values "v<i>" with keys "k<i % KEYS>",
// CHUNK records at a time, each chunk flushed before the next; after each chunk it prints
// one JSON line: {"sent": <records sent so far>, "reports": [[i, partition, offset], ...]},
// the partition and offset the producer's callback got (offset -1 when it got none, acks=0).
// The producer's own defaults stand unless a setting is given: since Kafka 3.0 they are
// enable.idempotence=true and acks=all. Exits 1 with the error on stderr if a send fails.
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaProducer {
    public static void main(String[] args) throws Exception {
        int count = Integer.parseInt(args[2]);
        int keys = Integer.parseInt(args[3]);
        int chunk = Integer.parseInt(args[4]);
        Properties settings = new Properties();
        settings.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        settings.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        for (int a = 5; a < args.length; a++) {
            String[] pair = args[a].split("=", 2);
            settings.put(pair[0], pair[1]);
        }
        AtomicReference<Exception> failure = new AtomicReference<>();
        try (KafkaProducer<String, String> producer =
                new KafkaProducer<>(settings, new StringSerializer(), new StringSerializer())) {
            for (int first = 0; first < count; first += chunk) {
                int end = Math.min(first + chunk, count);
                long[][] reports = new long[end - first][];
                for (int i = first; i < end; i++) {
                    final int slot = i - first;
                    final int index = i;
                    ProducerRecord<String, String> record =
                            new ProducerRecord<>(args[1], "k" + (i % keys), "v" + i);
                    producer.send(record, (metadata, error) -> {
                        if (error != null) {
                            failure.compareAndSet(null, error);
                        } else {
                            long offset = metadata.hasOffset() ? metadata.offset() : -1;
                            reports[slot] = new long[] {index, metadata.partition(), offset};
                        }
                    });
                }
                producer.flush();
                if (failure.get() != null) {
                    throw failure.get();
                }
                List<String> parts = new ArrayList<>();
                for (long[] r : reports) {
                    parts.add("[" + r[0] + "," + r[1] + "," + r[2] + "]");
                }
                System.out.println("{\"sent\": " + end + ", \"reports\": [" + String.join(",", parts) + "]}");
                System.out.flush();
            }
        } catch (Exception error) {
            System.err.println("java producer failed: " + error);
            error.printStackTrace();
            System.exit(1);
        }
    }
}
