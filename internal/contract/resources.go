package contract

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket settings have one owner: the operator. A service creates a stream
// or bucket that does not exist yet, with its configuration, and never changes one that
// exists: where the existing settings differ from its configuration it reports the
// difference (a warning naming each setting) and runs with what it finds. Clients
// (submit, status, export, retry, ...) create and change nothing. Changing retention,
// replicas, storage or the duplicate window of existing streams is the explicit operator
// command `flashpipe streams apply`, which shows every change before it applies it
// (Plan, then Apply).

// Difference is one setting of an existing stream or bucket that differs from the
// configuration.
type Difference struct {
	// Setting names it as the NATS API does: "max_age", "num_replicas", ...
	Setting string `json:"setting"`
	// Current is the value on the server, Configured the value the configuration asks for.
	Current    string `json:"current"`
	Configured string `json:"configured"`
}

func (d Difference) String() string {
	return fmt.Sprintf("%s is %s (configured: %s)", d.Setting, d.Current, d.Configured)
}

// Change is what Apply does to one stream or bucket: create it, or update the settings
// listed.
type Change struct {
	// Kind is "stream" or "bucket"; Name the stream or bucket name.
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Create is true for a resource that does not exist.
	Create      bool         `json:"create"`
	Differences []Difference `json:"differences,omitempty"`

	stream *jetstream.StreamConfig
	bucket *jetstream.KeyValueConfig
}

func (c Change) String() string {
	if c.Create {
		return fmt.Sprintf("create %s %s", c.Kind, c.Name)
	}
	parts := make([]string, len(c.Differences))
	for i, d := range c.Differences {
		parts[i] = fmt.Sprintf("%s %s -> %s", d.Setting, d.Current, d.Configured)
	}
	return fmt.Sprintf("update %s %s: %s", c.Kind, c.Name, strings.Join(parts, ", "))
}

// ErrMissing is returned (wrapped) by CheckStreams when a stream does not exist.
var ErrMissing = errors.New("does not exist")

// EnsureStream returns the stream cfg names, creating it with cfg if it does not exist.
// An existing stream is never changed; the settings in which it differs from cfg are
// returned, for the caller to report.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, []Difference, error) {
	for range 3 {
		st, err := js.Stream(ctx, cfg.Name)
		if err == nil {
			return st, StreamDifferences(st.CachedInfo().Config, cfg), nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
		st, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return st, nil, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		// Another process created it first: read what it made.
	}
	return nil, nil, fmt.Errorf("create stream %s: created and deleted concurrently", cfg.Name)
}

// EnsureKeyValue returns the bucket cfg names, creating it with cfg if it does not
// exist. An existing bucket is never changed; the settings in which it differs from cfg
// are returned, for the caller to report.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, []Difference, error) {
	for range 3 {
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err == nil {
			diffs, err := bucketDifferences(ctx, kv, cfg)
			return kv, diffs, err
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
		kv, err = js.CreateKeyValue(ctx, cfg)
		if err == nil {
			return kv, nil, nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil, nil, fmt.Errorf("create bucket %s: created and deleted concurrently", cfg.Bucket)
}

// OpenKeyValue is EnsureKeyValue for a service: it logs the settings in which an
// existing bucket differs from cfg.
func OpenKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, log *slog.Logger) (jetstream.KeyValue, error) {
	kv, diffs, err := EnsureKeyValue(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	ReportDifferences(log, "bucket", cfg.Bucket, diffs)
	return kv, nil
}

// ReportDifferences logs, as one warning, the settings in which an existing stream or
// bucket differs from this process's configuration.
func ReportDifferences(log *slog.Logger, kind, name string, diffs []Difference) {
	if len(diffs) == 0 || log == nil {
		return
	}
	parts := make([]string, len(diffs))
	for i, d := range diffs {
		parts[i] = d.String()
	}
	log.Warn(fmt.Sprintf("%s %s differs from this process's configuration; running with the existing settings (to change them: flashpipe streams apply)", kind, name),
		"differences", strings.Join(parts, "; "))
}

// StreamDifferences lists the operator-owned settings in which current differs from
// want: subjects, retention, storage, replicas, max age, duplicate window, limits,
// compression and direct gets.
func StreamDifferences(current, want jetstream.StreamConfig) []Difference {
	var d []Difference
	add := func(setting string, differ bool, cur, conf string) {
		if differ {
			d = append(d, Difference{Setting: setting, Current: cur, Configured: conf})
		}
	}
	add("subjects", !slices.Equal(current.Subjects, want.Subjects), strings.Join(current.Subjects, ","), strings.Join(want.Subjects, ","))
	add("retention", current.Retention != want.Retention, current.Retention.String(), want.Retention.String())
	add("storage", current.Storage != want.Storage, current.Storage.String(), want.Storage.String())
	add("num_replicas", max(current.Replicas, 1) != max(want.Replicas, 1), strconv.Itoa(max(current.Replicas, 1)), strconv.Itoa(max(want.Replicas, 1)))
	add("max_age", current.MaxAge != want.MaxAge, age(current.MaxAge), age(want.MaxAge))
	add("duplicate_window", want.Duplicates != 0 && current.Duplicates != want.Duplicates, current.Duplicates.String(), want.Duplicates.String())
	add("max_msgs_per_subject", limit(current.MaxMsgsPerSubject) != limit(want.MaxMsgsPerSubject), count(current.MaxMsgsPerSubject), count(want.MaxMsgsPerSubject))
	add("max_bytes", limit(current.MaxBytes) != limit(want.MaxBytes), count(current.MaxBytes), count(want.MaxBytes))
	add("compression", current.Compression != want.Compression, current.Compression.String(), want.Compression.String())
	add("allow_direct", current.AllowDirect != want.AllowDirect, strconv.FormatBool(current.AllowDirect), strconv.FormatBool(want.AllowDirect))
	return d
}

// bucketDifferences compares a bucket's stream with what cfg would create.
func bucketDifferences(ctx context.Context, kv jetstream.KeyValue, cfg jetstream.KeyValueConfig) ([]Difference, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return nil, nil
	}
	cur := bs.StreamInfo().Config
	var d []Difference
	add := func(setting string, differ bool, c, w string) {
		if differ {
			d = append(d, Difference{Setting: setting, Current: c, Configured: w})
		}
	}
	history := max(int64(cfg.History), 1)
	add("history", cur.MaxMsgsPerSubject != history, count(cur.MaxMsgsPerSubject), count(history))
	add("ttl", cur.MaxAge != cfg.TTL, age(cur.MaxAge), age(cfg.TTL))
	add("storage", cur.Storage != cfg.Storage, cur.Storage.String(), cfg.Storage.String())
	add("num_replicas", max(cur.Replicas, 1) != max(cfg.Replicas, 1), strconv.Itoa(max(cur.Replicas, 1)), strconv.Itoa(max(cfg.Replicas, 1)))
	return d, nil
}

func age(d time.Duration) string {
	if d <= 0 {
		return "forever"
	}
	return d.String()
}

func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func count(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// Plan compares the streams and buckets on the server with the configurations given
// and returns what Apply would do: create the missing ones, update the differing ones.
// It changes nothing.
func Plan(ctx context.Context, js jetstream.JetStream, streams []jetstream.StreamConfig, buckets []jetstream.KeyValueConfig) ([]Change, error) {
	var changes []Change
	for i := range streams {
		cfg := &streams[i]
		st, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			changes = append(changes, Change{Kind: "stream", Name: cfg.Name, Create: true, stream: cfg})
		case err != nil:
			return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		default:
			if d := StreamDifferences(st.CachedInfo().Config, *cfg); len(d) > 0 {
				changes = append(changes, Change{Kind: "stream", Name: cfg.Name, Differences: d, stream: cfg})
			}
		}
	}
	for i := range buckets {
		cfg := &buckets[i]
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			changes = append(changes, Change{Kind: "bucket", Name: cfg.Bucket, Create: true, bucket: cfg})
		case err != nil:
			return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		default:
			d, err := bucketDifferences(ctx, kv, *cfg)
			if err != nil {
				return nil, err
			}
			if len(d) > 0 {
				changes = append(changes, Change{Kind: "bucket", Name: cfg.Bucket, Differences: d, bucket: cfg})
			}
		}
	}
	return changes, nil
}

// Apply carries out the changes Plan returned, in order, stopping at the first the
// server refuses (some settings, such as storage, cannot be changed in place).
func Apply(ctx context.Context, js jetstream.JetStream, changes []Change) error {
	for _, ch := range changes {
		var err error
		switch {
		case ch.stream != nil && ch.Create:
			_, err = js.CreateStream(ctx, *ch.stream)
		case ch.stream != nil:
			_, err = js.UpdateStream(ctx, *ch.stream)
		case ch.bucket != nil && ch.Create:
			_, err = js.CreateKeyValue(ctx, *ch.bucket)
		case ch.bucket != nil:
			_, err = js.UpdateKeyValue(ctx, *ch.bucket)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", ch, err)
		}
	}
	return nil
}
