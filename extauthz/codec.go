package extauthz

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the standard codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// metadataField is CheckResponse.dynamic_metadata's field number.
var metadataField = (&authv3.CheckResponse{}).ProtoReflect().Descriptor().Fields().ByName("dynamic_metadata").Number()

// Codec is the gRPC codec of tokengate's server: the standard protobuf codec,
// except that a CheckResponse's dynamic metadata — a Struct whose values are
// all strings, as tokengate's always are — is encoded directly. The generic
// encoder goes through reflection for every map entry, twice (size, then
// bytes), which cost more than the whole cached check. The bytes mean the
// same message; TestCodecRoundTrip and FuzzCheck hold it to that.
type Codec struct{ std encoding.CodecV2 }

// NewCodec returns the codec; give it to grpc.ForceServerCodecV2.
func NewCodec() Codec { return Codec{std: encoding.GetCodecV2("proto")} }

// Name is "proto": the wire format is protobuf's.
func (Codec) Name() string { return "proto" }

// Unmarshal is the standard codec's.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error { return c.std.Unmarshal(data, v) }

// Marshal encodes v.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*authv3.CheckResponse)
	if !ok || !directlyEncodable(resp) {
		return c.std.Marshal(v)
	}
	b, err := appendCheckResponse(nil, resp)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// directlyEncodable: the response has metadata, only string values in it,
// and no unknown fields that a partial re-encoding could drop.
func directlyEncodable(resp *authv3.CheckResponse) bool {
	md := resp.GetDynamicMetadata()
	if md == nil || len(resp.ProtoReflect().GetUnknown()) > 0 || len(md.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	for _, v := range md.GetFields() {
		if _, ok := v.GetKind().(*structpb.Value_StringValue); !ok || len(v.ProtoReflect().GetUnknown()) > 0 {
			return false
		}
	}
	return true
}

// appendCheckResponse appends resp's encoding: every field but the metadata
// through the standard encoder, then the metadata Struct.
func appendCheckResponse(b []byte, resp *authv3.CheckResponse) ([]byte, error) {
	rest := &authv3.CheckResponse{Status: resp.Status, HttpResponse: resp.HttpResponse}
	b, err := proto.MarshalOptions{}.MarshalAppend(b, rest)
	if err != nil {
		return nil, err
	}
	fields := resp.DynamicMetadata.GetFields()
	size := 0
	for k, v := range fields {
		size += protowire.SizeTag(1) + protowire.SizeBytes(entrySize(k, v.GetStringValue()))
	}
	b = protowire.AppendTag(b, metadataField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	for k, v := range fields {
		s := v.GetStringValue()
		// Struct.fields (1) is a map<string, Value>: each entry a message
		// with key (1) and value (2); Value.string_value is field 3.
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(k, s)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(3)+protowire.SizeBytes(len(s))))
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b, nil
}

func entrySize(key, value string) int {
	valueMsg := protowire.SizeTag(3) + protowire.SizeBytes(len(value))
	return protowire.SizeTag(1) + protowire.SizeBytes(len(key)) + protowire.SizeTag(2) + protowire.SizeBytes(valueMsg)
}
