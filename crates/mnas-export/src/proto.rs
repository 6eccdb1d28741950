//! A minimal protobuf wire encoder for the ONNX messages the exporter writes.
//!
//! Field numbers are those of `onnx.proto3` (onnx 1.x). Repeated scalars are written unpacked,
//! as onnx's own (proto2) serialiser does; every protobuf parser accepts that form.

/// Wire types used here.
const VARINT: u32 = 0;
const FIXED32: u32 = 5;
const LEN: u32 = 2;

/// ONNX `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;

/// `AttributeProto.AttributeType` values.
const ATTR_FLOAT: u64 = 1;
const ATTR_INT: u64 = 2;
const ATTR_INTS: u64 = 7;

/// Appends protobuf fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

/// Appends `value` as a base-128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads a varint from the front of `bytes`: (value, bytes consumed); `None` if truncated or
/// longer than 10 bytes. The encoder never needs it; tests and debugging do.
pub fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

impl Writer {
    fn tag(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.buf, u64::from((field << 3) | wire));
    }

    /// An `int64`/`int32` field; negative values take 10 bytes (two's complement), as protobuf says.
    pub fn int(&mut self, field: u32, value: i64) {
        self.tag(field, VARINT);
        put_varint(&mut self.buf, value as u64);
    }

    pub fn uint(&mut self, field: u32, value: u64) {
        self.tag(field, VARINT);
        put_varint(&mut self.buf, value);
    }

    pub fn float(&mut self, field: u32, value: f32) {
        self.tag(field, FIXED32);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        self.tag(field, LEN);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    pub fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    /// A nested message, encoded by `f` into its own buffer and written length-prefixed.
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        f(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

/// A tensor dimension: a fixed size or a symbolic name (`dim_param`).
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Value(i64),
    Param(String),
}

/// `ValueInfoProto` for a float tensor of the given shape.
#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Dim>,
}

impl ValueInfo {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        // TypeProto.tensor_type (1) -> Tensor { elem_type (1), shape (2) }
        w.message(2, |t| {
            t.message(1, |tt| {
                tt.int(1, i64::from(FLOAT));
                tt.message(2, |shape| {
                    for d in &self.dims {
                        shape.message(1, |dim| match d {
                            Dim::Value(v) => dim.int(1, *v),
                            Dim::Param(p) => dim.string(2, p),
                        });
                    }
                });
            });
        });
    }
}

/// A float initializer (`TensorProto` with `raw_data`, little-endian).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

impl Tensor {
    fn encode(&self, w: &mut Writer) {
        for &d in &self.dims {
            w.int(1, d);
        }
        w.int(2, i64::from(FLOAT));
        w.string(8, &self.name);
        let mut raw = Vec::with_capacity(self.data.len() * 4);
        for v in &self.data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        w.bytes(9, &raw);
    }
}

/// The attribute kinds the exporter emits.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

impl Attribute {
    pub fn int(name: &str, v: i64) -> Attribute {
        Attribute { name: name.into(), value: AttrValue::Int(v) }
    }

    pub fn ints(name: &str, v: &[i64]) -> Attribute {
        Attribute { name: name.into(), value: AttrValue::Ints(v.to_vec()) }
    }

    pub fn float(name: &str, v: f32) -> Attribute {
        Attribute { name: name.into(), value: AttrValue::Float(v) }
    }

    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        match &self.value {
            AttrValue::Float(f) => {
                w.float(2, *f);
                w.uint(20, ATTR_FLOAT);
            }
            AttrValue::Int(i) => {
                w.int(3, *i);
                w.uint(20, ATTR_INT);
            }
            AttrValue::Ints(v) => {
                for &i in v {
                    w.int(8, i);
                }
                w.uint(20, ATTR_INTS);
            }
        }
    }
}

/// `NodeProto` in the default (ai.onnx) domain.
#[derive(Debug, Clone)]
pub struct Node {
    pub op_type: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

impl Node {
    fn encode(&self, w: &mut Writer) {
        for i in &self.inputs {
            w.string(1, i);
        }
        for o in &self.outputs {
            w.string(2, o);
        }
        w.string(3, &self.name);
        w.string(4, &self.op_type);
        for a in &self.attributes {
            w.message(5, |aw| a.encode(aw));
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub doc_string: String,
}

impl Graph {
    fn encode(&self, w: &mut Writer) {
        for n in &self.nodes {
            w.message(1, |nw| n.encode(nw));
        }
        w.string(2, &self.name);
        for t in &self.initializers {
            w.message(5, |tw| t.encode(tw));
        }
        if !self.doc_string.is_empty() {
            w.string(10, &self.doc_string);
        }
        for v in &self.inputs {
            w.message(11, |vw| v.encode(vw));
        }
        for v in &self.outputs {
            w.message(12, |vw| v.encode(vw));
        }
    }
}

/// `ModelProto` with one opset import of the default domain.
#[derive(Debug, Clone)]
pub struct Model {
    pub ir_version: i64,
    pub opset: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub doc_string: String,
    pub graph: Graph,
    pub metadata: Vec<(String, String)>,
}

impl Model {
    /// Bytes the encoded initializers will take: a lower bound of the file size.
    pub fn initializer_bytes(&self) -> u64 {
        self.graph.initializers.iter().map(|t| t.data.len() as u64 * 4).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.int(1, self.ir_version);
        w.string(2, &self.producer_name);
        w.string(3, &self.producer_version);
        if !self.doc_string.is_empty() {
            w.string(6, &self.doc_string);
        }
        w.message(7, |g| self.graph.encode(g));
        // OperatorSetIdProto { domain (1) = "" (omitted), version (2) }
        w.message(8, |o| o.int(2, self.opset));
        for (k, v) in &self.metadata {
            w.message(14, |e| {
                e.string(1, k);
                e.string(2, v);
            });
        }
        w.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, 1 << 56, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(get_varint(&buf), Some((v, buf.len())), "{v}");
            assert!(buf.len() <= 10);
        }
        let mut buf = Vec::new();
        put_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        assert_eq!(get_varint(&[0x80]), None, "a truncated varint is not a value");
    }

    #[test]
    fn negative_int_takes_ten_bytes() {
        let mut w = Writer::default();
        w.int(3, -1);
        assert_eq!(hex(&w.buf), "18ffffffffffffffffff01");
    }

    /// Bytes produced by `onnx.helper.make_node('Conv', ['x','w'], ['y'], name='c',
    /// kernel_shape=[3,3], group=2).SerializeToString()` with onnx 1.23.
    #[test]
    fn node_matches_onnx_serialisation() {
        let node = Node {
            op_type: "Conv".into(),
            name: "c".into(),
            inputs: vec!["x".into(), "w".into()],
            outputs: vec!["y".into()],
            attributes: vec![Attribute::int("group", 2), Attribute::ints("kernel_shape", &[3, 3])],
        };
        let mut w = Writer::default();
        node.encode(&mut w);
        assert_eq!(
            hex(&w.buf),
            "0a01780a01771201791a01632204436f6e762a0c0a0567726f75701802a001022a150a0c6b65726e656c5f736861706540034003a00107"
        );
    }

    /// `onnx.helper.make_attribute('axis', -1)`.
    #[test]
    fn negative_attribute_matches_onnx() {
        let mut w = Writer::default();
        Attribute::int("axis", -1).encode(&mut w);
        assert_eq!(hex(&w.buf), "0a046178697318ffffffffffffffffff01a00102");
    }

    #[test]
    fn tensor_holds_raw_little_endian_floats() {
        let t = Tensor { name: "t".into(), dims: vec![2], data: vec![1.0, -2.0] };
        let mut w = Writer::default();
        t.encode(&mut w);
        // dims 2, data_type FLOAT, name "t", raw_data 8 bytes
        assert_eq!(hex(&w.buf), "080210014201744a080000803f000000c0");
    }
}
