package natsx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream makes sure the stream exists as cfg describes. It first reads the
// stream's configuration (one $JS.API.STREAM.INFO request, which every service's
// permissions allow) and creates or updates the stream only when it is missing or
// differs in a field cfg sets. So a service whose NATS user may not manage streams
// starts against the streams an administrator created (docs/security.md), and a
// user that may manage them keeps them up to date as before.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile, otherwise
			return EnsureStream(ctx, js, cfg)
		}
		return st, err
	case err != nil:
		return nil, err
	}
	have := st.CachedInfo().Config
	if diff := streamDiff(cfg, have, atLeast(js, 2, 12)); diff != "" {
		st, err = js.UpdateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("stream %s differs from flashpipe's configuration (%s) and updating it failed: %w", cfg.Name, diff, err)
		}
	}
	return st, nil
}

// streamDiff names the first field cfg sets that have lacks ("" if none).
// AllowAtomicPublish counts only on servers that know it (2.12+).
func streamDiff(want, have jetstream.StreamConfig, atomic bool) string {
	switch {
	case want.Description != have.Description:
		return "description"
	case !slices.Equal(want.Subjects, have.Subjects):
		return "subjects"
	case want.Retention != have.Retention:
		return "retention"
	case want.Discard != have.Discard:
		return "discard"
	case want.Storage != have.Storage:
		return "storage"
	case max(want.Replicas, 1) != max(have.Replicas, 1):
		return "replicas"
	case want.MaxAge != have.MaxAge:
		return "max age"
	case want.Duplicates != 0 && want.Duplicates != have.Duplicates:
		return "duplicate window"
	case want.AllowDirect != have.AllowDirect:
		return "allow direct"
	case atomic && want.AllowAtomicPublish != have.AllowAtomicPublish:
		return "allow atomic publish"
	}
	return ""
}

// EnsureKeyValue makes sure the KV bucket exists as cfg describes, like
// EnsureStream: it creates or updates the bucket only when it is missing or differs
// in description, history, TTL, storage or replicas.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // created meanwhile by another replica
			return EnsureKeyValue(ctx, js, cfg)
		}
		return kv, err
	case err != nil:
		return nil, err
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	cs, ok := status.(interface {
		Config() jetstream.KeyValueConfig
	})
	if !ok {
		return nil, fmt.Errorf("KV bucket %s: no configuration in its status", cfg.Bucket)
	}
	if diff := kvDiff(cfg, cs.Config()); diff != "" {
		kv, err = js.UpdateKeyValue(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("KV bucket %s differs from flashpipe's configuration (%s) and updating it failed: %w", cfg.Bucket, diff, err)
		}
	}
	return kv, nil
}

func kvDiff(want, have jetstream.KeyValueConfig) string {
	switch {
	case want.Description != have.Description:
		return "description"
	case max(want.History, 1) != max(have.History, 1):
		return "history"
	case want.TTL != have.TTL:
		return "TTL"
	case want.Storage != have.Storage:
		return "storage"
	case max(want.Replicas, 1) != max(have.Replicas, 1):
		return "replicas"
	}
	return ""
}

// atLeast reports whether the connected server's version is at least major.minor.
func atLeast(js jetstream.JetStream, major, minor int) bool {
	parts := strings.SplitN(js.Conn().ConnectedServerVersion(), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
