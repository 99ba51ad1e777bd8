package extauthz_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/go-cmp/cmp"

	"github.com/tokengate/tokengate/extauthz"
)

// roundTrip encodes with the server's codec and decodes with the standard
// protobuf decoder: the message must come back equal.
func roundTrip(t *testing.T, in *authv3.CheckResponse) {
	t.Helper()
	c := extauthz.NewCodec()
	data, err := c.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	out := &authv3.CheckResponse{}
	if err := proto.Unmarshal(data.Materialize(), out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if diff := cmp.Diff(in, out, protocmp.Transform()); diff != "" {
		t.Errorf("round trip (-in +out):\n%s", diff)
	}
	data.Free()
}

func TestCodecRoundTrip(t *testing.T) {
	str := structpb.NewStringValue
	long := string(make([]byte, 300)) // lengths past one varint byte
	cases := map[string]*authv3.CheckResponse{
		"allow": {
			Status: &status.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-auth-subject", Value: "ü"}}},
				HeadersToRemove: []string{"x-auth-roles"},
			}},
			DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				"reason": str("allowed"), "decision_id": str("abc-1"), "sub": str(""), "": str("empty key"), "long": str(long),
			}},
		},
		"deny": {
			Status:          &status.Status{Code: 16, Message: "token_expired"},
			HttpResponse:    &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Body: "{}"}},
			DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"reason": str("token_expired")}},
		},
		"empty metadata":           {Status: &status.Status{}, DynamicMetadata: &structpb.Struct{}},
		"no metadata (standard)":   {Status: &status.Status{Code: 14}},
		"a non-string (standard)":  {DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(3)}}},
		"a nil value (standard)":   {DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"nil": nil, "s": str("x")}}},
		"nested struct (standard)": {DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"o": structpb.NewStructValue(&structpb.Struct{})}}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) { roundTrip(t, in) })
	}
	// Anything else goes through the standard codec unchanged.
	data, err := extauthz.NewCodec().Marshal(&status.Status{Code: 5})
	if err != nil || len(data.Materialize()) == 0 {
		t.Errorf("Marshal(Status) = %v, %v", data, err)
	}
}
