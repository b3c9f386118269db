package secret

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler wraps an slog.Handler so that no record reaches it with a fragment of a
// secret: the message, every string attribute, every error and every other value
// whose text holds one. Put it under the process's logger and no call site can
// forget to redact.
//
// Attributes given to WithAttrs (logger.With) are redacted when they are given, with
// the secrets known then; add the secrets before deriving loggers.
type Handler struct {
	h slog.Handler
	r *Redactor
}

// NewHandler returns h redacting with r.
func NewHandler(h slog.Handler, r *Redactor) *Handler { return &Handler{h: h, r: r} }

// Enabled reports whether the wrapped handler handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.h.Enabled(ctx, level)
}

// Handle redacts the record and passes it on.
func (h *Handler) Handle(ctx context.Context, rec slog.Record) error {
	if h.r.Empty() {
		return h.h.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

// WithAttrs redacts attrs and returns a handler that adds them.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &Handler{h: h.h.WithAttrs(clean), r: h.r}
}

// WithGroup returns a handler that opens the group.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{h: h.h.WithGroup(name), r: h.r}
}

func (h *Handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s, clean := v.String(), h.r.Redact(v.String()); clean != s {
			return slog.String(a.Key, clean)
		}
	case slog.KindGroup:
		g := v.Group()
		clean := make([]slog.Attr, len(g))
		for i, ga := range g {
			clean[i] = h.attr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	case slog.KindAny:
		text, ok := textOf(v.Any())
		if !ok {
			return slog.Attr{Key: a.Key, Value: v}
		}
		if clean := h.r.Redact(text); clean != text {
			return slog.String(a.Key, clean)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// textOf is the text a handler would print for x (false for nil, or when formatting
// panics, as it may for a nil pointer behind an interface).
func textOf(x any) (text string, ok bool) {
	defer func() {
		if recover() != nil {
			text, ok = "", false
		}
	}()
	switch x := x.(type) {
	case nil:
		return "", false
	case error:
		return x.Error(), true
	case fmt.Stringer:
		return x.String(), true
	default:
		return fmt.Sprintf("%+v", x), true
	}
}
