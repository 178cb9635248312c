// A sarama producer for kpd's Kafka listener (tests/integration/test_kafka_listener_clients.py).
//
// Usage: sarama_producer '<json>' with {bootstrap, topic, count, keys, acks, chunk, gzip,
// per_request}.
// Sends values "v<i>" with keys "k<i % keys>", `chunk` records per SyncProducer.SendMessages
// in turn. After each call it prints one JSON line:
// {"sent": <records sent so far>, "reports": [[i, partition, offset], ...]}, the offset being
// the one sarama set on record i, or -1 when there is none: kpd answers base offset -1 at
// acks=1 (before Kafka does) and to a resend whose first outcome it lost, and sarama adds the
// record's place in the batch to it (so acks=1 offsets are reported as -1; with one record per
// request, as the kill test sends, a resend's offset is -1 + 0). acks=-1 runs sarama's idempotent producer, which needs one request in
// flight. per_request > 0 caps the records per Produce request (Producer.Flush.MaxMessages):
// at 1, each batch is one record, so a resend after a reconnect is the same batch as the first
// copy, which this sarama (1.22) does not otherwise keep: it re-batches retried records with
// newer ones (IBM/sarama#1070), and a broker answers such a batch OUT_OF_ORDER_SEQUENCE_NUMBER
// when the first copy was written. Exits 1 with the error on stderr if a send fails.
//
// Built offline in GOPATH mode against Debian's golang-github-shopify-sarama-dev (sarama
// 1.22.1, in /usr/share/gocode), never vendored into the repository.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/Shopify/sarama"
)

type settings struct {
	Bootstrap  string `json:"bootstrap"`
	Topic      string `json:"topic"`
	Count      int    `json:"count"`
	Keys       int    `json:"keys"`
	Acks       int    `json:"acks"`
	Chunk      int    `json:"chunk"`
	Gzip       bool   `json:"gzip"`
	PerRequest int    `json:"per_request"`
}

type progress struct {
	Sent    int        `json:"sent"`
	Reports [][3]int64 `json:"reports"`
}

func configure(cfg settings) *sarama.Config {
	config := sarama.NewConfig()
	config.ClientID = "kpd-sarama-test"
	// Produce v3 (RecordBatch v2, the only record format kpd reads) and Metadata v5; the
	// idempotent producer needs at least 0.11.
	config.Version = sarama.V1_0_0_0
	config.Producer.Return.Successes = true                 // SyncProducer's requirement
	config.Producer.Partitioner = sarama.NewHashPartitioner // FNV-1a of the key
	config.Producer.RequiredAcks = sarama.RequiredAcks(cfg.Acks)
	if cfg.Acks == -1 {
		config.Producer.Idempotent = true
		config.Net.MaxOpenRequests = 1
	}
	if cfg.Gzip {
		config.Producer.Compression = sarama.CompressionGZIP
	}
	config.Producer.Flush.MaxMessages = cfg.PerRequest
	// A killed ingest is replaced within a second or two; keep retrying until then.
	config.Producer.Retry.Max = 30
	config.Producer.Retry.Backoff = 200 * time.Millisecond
	config.Metadata.Retry.Max = 30
	config.Metadata.Retry.Backoff = 200 * time.Millisecond
	return config
}

func run(cfg settings) error {
	producer, err := sarama.NewSyncProducer([]string{cfg.Bootstrap}, configure(cfg))
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	for first := 0; first < cfg.Count; first += cfg.Chunk {
		var messages []*sarama.ProducerMessage
		for i := first; i < first+cfg.Chunk && i < cfg.Count; i++ {
			messages = append(messages, &sarama.ProducerMessage{
				Topic:    cfg.Topic,
				Key:      sarama.StringEncoder(fmt.Sprintf("k%d", i%cfg.Keys)),
				Value:    sarama.StringEncoder(fmt.Sprintf("v%d", i)),
				Offset:   -1, // stays so when sarama sets none
				Metadata: i,
			})
		}
		if err := producer.SendMessages(messages); err != nil {
			return explained(err)
		}
		reports := make([][3]int64, 0, len(messages))
		for _, m := range messages {
			offset := m.Offset
			if cfg.Acks != -1 {
				offset = -1
			}
			reports = append(reports, [3]int64{int64(m.Metadata.(int)), int64(m.Partition), offset})
		}
		if err := out.Encode(progress{Sent: first + len(messages), Reports: reports}); err != nil {
			return err
		}
	}
	return producer.Close()
}

// explained: a failed SendMessages with each distinct cause and how many records it failed.
func explained(err error) error {
	failed, ok := err.(sarama.ProducerErrors)
	if !ok {
		return err
	}
	causes := map[string]int{}
	for _, e := range failed {
		causes[e.Err.Error()]++
	}
	return fmt.Errorf("%v: %v", err, causes)
}

func main() {
	// Sarama's own log (retries after a kill) goes to stderr: stdout carries the reports.
	sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	var cfg settings
	if err := json.Unmarshal([]byte(os.Args[1]), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bad settings: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "sarama failed: %v\n", err)
		os.Exit(1)
	}
}
