// SPDX-License-Identifier: Apache-2.0
// What the tests' OTLP receivers share: the request/response messages generated from the
// official definitions in @opentelemetry/otlp-transformer, and the TraceService/Export method
// as a @grpc/grpc-js service definition (opentelemetry/proto/collector/trace/v1).
'use strict';

const root = require('@opentelemetry/otlp-transformer/build/src/generated/root');

const pb = root.opentelemetry.proto.collector.trace.v1;
const Req = pb.ExportTraceServiceRequest;
const Resp = pb.ExportTraceServiceResponse;

const service = {
	Export: {
		path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
		requestStream: false,
		responseStream: false,
		requestSerialize: m => Buffer.from(Req.encode(m).finish()),
		requestDeserialize: b => Req.decode(b),
		responseSerialize: m => Buffer.from(Resp.encode(m).finish()),
		responseDeserialize: b => Resp.decode(b),
	},
};

module.exports = { Req, Resp, service };
