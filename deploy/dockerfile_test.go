package deploy_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// finalStage returns the instructions of a Dockerfile's last stage (from its FROM on),
// with continuation lines joined and comments dropped.
func finalStage(t *testing.T, path string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(string(readFile(t, path)), "\\\n", " "), "\n") {
		l = strings.Join(strings.Fields(l), " ")
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "FROM ") {
			lines = lines[:0]
		}
		lines = append(lines, l)
	}
	return lines
}

// deploy/Dockerfile cannot be built here (no registry), so its build arguments and its
// final stage are checked against what can be: its Go version is go.mod's (the golang
// image sets GOTOOLCHAIN=local, so an older one fails the build), and the final stage
// sets the same user, entrypoint, directory, ports and settings as Dockerfile.prebuilt,
// which the image test builds and runs.
func TestDockerfileMatchesTheTestedImage(t *testing.T) {
	t.Parallel()
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(readFile(t, "../go.mod"))
	arg := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindSubmatch(readFile(t, "Dockerfile"))
	if goLine == nil || arg == nil || string(goLine[1]) != string(arg[1]) {
		t.Errorf("deploy/Dockerfile: ARG GO_VERSION must be go.mod's go version (found %q and %q)", arg, goLine)
	}
	user, prebuilt := finalStage(t, "Dockerfile"), finalStage(t, "Dockerfile.prebuilt")
	for _, prefix := range []string{"USER ", "ENTRYPOINT ", "CMD ", "WORKDIR ", "EXPOSE "} {
		a := slices.IndexFunc(user, func(l string) bool { return strings.HasPrefix(l, prefix) })
		b := slices.IndexFunc(prebuilt, func(l string) bool { return strings.HasPrefix(l, prefix) })
		if a < 0 || b < 0 || user[a] != prebuilt[b] {
			t.Errorf("%s differs: Dockerfile %q, Dockerfile.prebuilt %q", strings.TrimSpace(prefix), at(user, a), at(prebuilt, b))
		}
	}
	for _, l := range user {
		if strings.HasPrefix(l, "ENV ") && !strings.Contains(strings.Join(prebuilt, "\n"), strings.TrimPrefix(l, "ENV ")) {
			t.Errorf("Dockerfile.prebuilt lacks %q", l)
		}
	}
	if !slices.Contains(user, `ENTRYPOINT ["flashpipe"]`) || !slices.Contains(user, "USER 65532:65532") {
		t.Errorf("deploy/Dockerfile: want ENTRYPOINT [\"flashpipe\"] and a non-root USER, final stage %q", user)
	}
	if !strings.HasPrefix(user[0], "FROM gcr.io/distroless/static") || !strings.Contains(string(readFile(t, "Dockerfile")), "CGO_ENABLED=0 go build") {
		t.Errorf("deploy/Dockerfile: want a static binary (CGO_ENABLED=0) on distroless/static, final stage %q", user)
	}
}

func at(lines []string, i int) string {
	if i < 0 {
		return ""
	}
	return lines[i]
}
