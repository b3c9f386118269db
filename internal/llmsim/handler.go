package llmsim

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/flashpipe/flashpipe/internal/llm/wire"
)

// Shared header values (never modified).
var (
	hdrJSON = []string{"application/json"}
	hdrOne  = []string{"1"}
)

// ServeHTTP serves the simulated API.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/chat/completions", "/v1/chat/completions", "/api/v1/chat/completions":
		if r.Method != http.MethodPost {
			w.Header()["Allow"] = []string{http.MethodPost}
			s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed: use POST", nil, false)
			return
		}
		s.chat(w, r)
	case "/key", "/v1/key", "/api/v1/key":
		if r.Method != http.MethodGet {
			w.Header()["Allow"] = []string{http.MethodGet}
			s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed: use GET", nil, false)
			return
		}
		s.key(w, r)
	case "/models", "/v1/models", "/api/v1/models":
		if r.Method != http.MethodGet {
			w.Header()["Allow"] = []string{http.MethodGet}
			s.writeError(w, http.StatusMethodNotAllowed, "Method not allowed: use GET", nil, false)
			return
		}
		s.models(w, r)
	default:
		if s.serveBatches(w, r) {
			return
		}
		s.writeError(w, http.StatusNotFound, "Not found: "+r.URL.Path, nil, false)
	}
}

// authorized checks the Bearer key when Config.RequireKey is set.
func (s *Simulator) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.RequireKey == "" {
		return true
	}
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	switch {
	case !ok || token == "":
		s.writeError(w, http.StatusUnauthorized, "No auth credentials found", nil, true)
		return false
	case subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.RequireKey)) != 1:
		s.writeError(w, http.StatusUnauthorized, "User not found.", nil, true)
		return false
	}
	return true
}

// chatMessage is one message of a request. The fast decoder leaves Content empty
// and records only its size.
type chatMessage struct {
	Role    string
	Content string
	size    int
}

// chatRequest is the part of a chat completion request the simulator reads; other
// fields (temperature, response_format, provider, ...) are accepted and ignored.
type chatRequest struct {
	Model     string
	Messages  []chatMessage
	Stream    bool
	MaxTokens int
	// User is the last user message's content.
	User string
}

// flexContent is a message content given as a string or as an array of parts (whose
// text parts are joined).
type flexContent string

func (c *flexContent) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = flexContent(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content is neither a string nor an array of parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type == "text" || p.Type == "" {
			sb.WriteString(p.Text)
		}
	}
	*c = flexContent(sb.String())
	return nil
}

// decodeChatRequest reads the request with the fast reader when it accepts the body,
// else with encoding/json (content given as parts, odd keys, errors).
func decodeChatRequest(d *wire.Decoder, body []byte, req *chatRequest) error {
	if decodeChatRequestFast(d, body, req) {
		return nil
	}
	return decodeChatRequestStd(body, req)
}

// decodeChatRequestStd reads the request with encoding/json.
func decodeChatRequestStd(body []byte, req *chatRequest) error {
	var std struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string      `json:"role"`
			Content flexContent `json:"content"`
		} `json:"messages"`
		Stream    bool `json:"stream"`
		MaxTokens int  `json:"max_tokens"`
	}
	if err := json.Unmarshal(body, &std); err != nil {
		return err
	}
	*req = chatRequest{Model: std.Model, Stream: std.Stream, MaxTokens: std.MaxTokens}
	for _, m := range std.Messages {
		req.Messages = append(req.Messages, chatMessage{Role: m.Role, Content: string(m.Content)})
	}
	req.fillUser()
	return nil
}

func (req *chatRequest) fillUser() {
	for i := range req.Messages {
		req.Messages[i].size = len(req.Messages[i].Content)
		if req.Messages[i].Role == "user" {
			req.User = req.Messages[i].Content
		}
	}
}

func decodeChatRequestFast(d *wire.Decoder, body []byte, req *chatRequest) bool {
	d.Reset(body)
	// Contents are only checked here, not decoded: the simulator reads the last user
	// message and the others' sizes.
	var user []byte
	ok := d.Object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "model":
			req.Model, _, ok = d.String()
			return ok
		case "stream":
			req.Stream, ok = d.Bool()
			return ok
		case "max_tokens":
			var n int64
			n, ok = d.Int()
			req.MaxTokens = int(n)
			return ok
		case "messages":
			if d.Null() {
				return true
			}
			req.Messages = req.Messages[:0]
			user = nil
			return d.Array(func(int) bool {
				var m chatMessage
				var raw []byte
				ok := d.Object(func(k []byte) bool {
					var ok bool
					switch string(k) {
					case "role":
						m.Role, _, ok = d.String()
						return ok
					case "content":
						if p := d.Peek(); p != '"' && p != 'n' {
							return false // parts: encoding/json reads them
						}
						raw, ok = d.Raw()
						if string(raw) == "null" {
							raw = nil
						}
						return ok
					}
					return !foldsTo(k, "role", "content") && d.Skip()
				})
				m.size = len(raw)
				if m.Role == "user" {
					user = raw
				}
				req.Messages = append(req.Messages, m)
				return ok
			})
		}
		return !foldsTo(k, "model", "messages", "stream", "max_tokens") && d.Skip()
	})
	if !ok || !d.End() {
		return false
	}
	if user != nil {
		// A view, not a copy: valid while the caller holds d and body.
		d.Reset(user)
		var ok bool
		req.User, _, ok = d.StringUnsafe()
		return ok
	}
	return true
}

// foldsTo reports whether key matches one of names case-insensitively (encoding/json
// would fill that field, so the fast decoder leaves the body to it).
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return true
		}
	}
	return false
}
