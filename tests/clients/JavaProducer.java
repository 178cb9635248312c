// A Java KafkaProducer for kpd's Kafka listener (tests/integration/test_kafka_listener_clients.py).
//
// Usage: java -cp <classes>:kafka-clients.jar:slf4j-api.jar JavaProducer BOOTSTRAP TOPIC COUNT
// KEYS CHUNK [KEY=VALUE producer settings...]. Sends values "v<i>" with keys "k<i % KEYS>",
// all in one stream (no flush until the end, so a kill lands anywhere in it); every CHUNK
// completions it prints one JSON line: {"sent": <records completed so far>, "reports":
// [[i, partition, offset], ...]}, the partition and offset the producer's callback got (offset
// -1 when it got none: acks=0, or a resend kpd answered without an offset).
// The producer's own defaults stand unless a setting is given: since Kafka 3.0 they are
// enable.idempotence=true and acks=all. Exits 1 with the error on stderr if a send fails.
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class JavaProducer {
    private static final List<String> reports = new ArrayList<>();
    private static int completed = 0;
    private static Exception failure = null;

    private static synchronized void report(int index, int partition, long offset, int chunk) {
        reports.add("[" + index + "," + partition + "," + offset + "]");
        completed++;
        if (reports.size() >= chunk) {
            printReports();
        }
    }

    private static synchronized void printReports() {
        System.out.println("{\"sent\": " + completed + ", \"reports\": [" + String.join(",", reports) + "]}");
        System.out.flush();
        reports.clear();
    }

    private static synchronized void fail(Exception error) {
        if (failure == null) {
            failure = error;
        }
    }

    public static void main(String[] args) {
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
        try (KafkaProducer<String, String> producer =
                new KafkaProducer<>(settings, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < count; i++) {
                final int index = i;
                ProducerRecord<String, String> record =
                        new ProducerRecord<>(args[1], "k" + (i % keys), "v" + i);
                producer.send(record, (metadata, error) -> {
                    if (error != null) {
                        fail(error);
                    } else {
                        long offset = metadata.hasOffset() ? metadata.offset() : -1;
                        report(index, metadata.partition(), offset, chunk);
                    }
                });
            }
            producer.flush();
        }
        synchronized (JavaProducer.class) {
            if (failure != null) {
                System.err.println("java producer failed: " + failure);
                failure.printStackTrace();
                System.exit(1);
            }
            if (!reports.isEmpty()) {
                printReports();
            }
        }
    }
}
