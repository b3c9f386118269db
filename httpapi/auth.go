package httpapi

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"unicode"

	"github.com/flashpipe/flashpipe"
)

// MinTokenLength is the shortest token accepted: a token is a password that anyone
// reaching the port can try, so it must be too long to guess (openssl rand -hex 32
// makes a good one).
const MinTokenLength = 16

// Token is one bearer token the API accepts.
type Token struct {
	// Secret is the token itself. It never appears in an answer or a log line.
	Secret string
	// Tenant, when set, is stamped on every batch the token submits, and the token
	// sees only that tenant's batches. A token without a tenant may name any tenant
	// and sees every batch.
	Tenant string
}

// ParseTokens reads tokens, one a line: the token, then optionally blanks and its
// tenant. Blank lines and lines starting with '#' are skipped. source names the
// input in errors ("tokens.txt", "FLASHPIPE_API_TOKENS"); an error names the line,
// never the token.
func ParseTokens(r io.Reader, source string) ([]Token, error) {
	var tokens []Token
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		t := Token{Secret: fields[0]}
		switch {
		case len(fields) > 2:
			return nil, fmt.Errorf("%s line %d: want a token and optionally a tenant, found %d fields", source, line, len(fields))
		case len(t.Secret) < MinTokenLength:
			return nil, fmt.Errorf("%s line %d: the token is shorter than %d characters (openssl rand -hex 32 makes one)", source, line, MinTokenLength)
		case strings.IndexFunc(t.Secret, unicode.IsControl) >= 0:
			return nil, fmt.Errorf("%s line %d: the token contains a control character", source, line)
		}
		if len(fields) == 2 {
			t.Tenant = fields[1]
			if err := flashpipe.ValidateTenant(t.Tenant); err != nil {
				return nil, fmt.Errorf("%s line %d: %w", source, line, err)
			}
		}
		if prev, ok := seen[t.Secret]; ok {
			return nil, fmt.Errorf("%s line %d: the same token as line %d", source, line, prev)
		}
		seen[t.Secret] = line
		tokens = append(tokens, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return tokens, nil
}

// LoadTokens reads the tokens of a file (ParseTokens) and of an environment value
// whose entries are separated by commas or newlines; either may be empty.
func LoadTokens(file, envName, envValue string) ([]Token, error) {
	var tokens []Token
	if envValue != "" {
		t, err := ParseTokens(strings.NewReader(strings.ReplaceAll(envValue, ",", "\n")), envName)
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, t...)
	}
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("tokens file: %w", err)
		}
		defer f.Close()
		t, err := ParseTokens(f, file)
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, t...)
	}
	return tokens, nil
}

// principal is who a request is from.
type principal struct {
	// tenant is the token's tenant; restricted says the token has one.
	tenant     string
	restricted bool
	// csrf is the token the pages' forms must carry for this session.
	csrf string
}

// sees reports whether p may see a batch of the tenant.
func (p principal) sees(tenant string) bool { return !p.restricted || p.tenant == tenant }

type principalKey struct{}

func principalOf(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// keyring holds the accepted tokens as SHA-256 digests, so every comparison takes
// the same time whatever the lengths, and compares a presented token with all of
// them without stopping at a match.
type keyring struct {
	digests [][sha256.Size]byte
	tokens  []Token
	// open is true when there are no tokens: every request is let in.
	open bool
	// openKey signs the CSRF tokens of an open server (random per process).
	openKey []byte
}

func newKeyring(tokens []Token, openKey []byte) *keyring {
	k := &keyring{tokens: tokens, open: len(tokens) == 0, openKey: openKey}
	for _, t := range tokens {
		k.digests = append(k.digests, sha256.Sum256([]byte(t.Secret)))
	}
	return k
}

// errNoToken and errBadToken are the two refusals of a request (401).
var (
	errNoToken  = errors.New("no token: send the header Authorization: Bearer TOKEN")
	errBadToken = errors.New("the token is not valid")
)

// check returns the principal of a presented token.
func (k *keyring) check(secret string) (principal, error) {
	if k.open {
		return principal{csrf: csrfToken(k.openKey)}, nil
	}
	if secret == "" {
		return principal{}, errNoToken
	}
	d := sha256.Sum256([]byte(secret))
	match := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return principal{}, errBadToken
	}
	t := k.tokens[match]
	return principal{tenant: t.Tenant, restricted: t.Tenant != "", csrf: csrfToken([]byte(t.Secret))}, nil
}

// csrfToken is the CSRF token of a session: an HMAC of a fixed text keyed by the
// session's token, so every replica derives the same one and nobody without the
// token can.
func csrfToken(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("flashpipe csrf v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// bearer returns the token of an Authorization: Bearer header ("" if none).
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// requireToken lets a request with a valid bearer token through, with its principal
// in the context; others get a 401.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.keys.check(bearer(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="flashpipe"`)
			s.fail(w, r, &Error{Status: http.StatusUnauthorized, Message: err.Error()})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
