// A restricted, non-executing unpickler for PyTorch checkpoints.
//
// It understands the subset of the pickle protocol (versions 2-4) that
// torch.save produces and builds a small value graph from it. Only a fixed
// list of globals may be referenced (collections.OrderedDict, the two torch
// tensor rebuild functions, the typed storage classes and argparse.Namespace);
// none of them is ever called: each is modelled by inert code here. Anything
// else, and any malformed input, throws xlmr::Error. Memory use is bounded by
// limits on the number of objects, stack depth and memo size; the parser
// itself is iterative, so hostile nesting cannot overflow the call stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "weights/dtype.h"

namespace xlmr {
namespace pickle {

enum class Kind {
  none,
  boolean,
  integer,   // fits in int64
  bigint,    // does not fit: little-endian two's complement bytes in `str`
  floating,
  string,    // valid UTF-8 in `str`
  bytes,     // raw bytes in `str`
  tuple,
  list,
  dict,      // ordered; `ordered_dict` tells collections.OrderedDict apart
  global,    // an allowed global, see GlobalId
  storage,   // the result of a persistent-id lookup
  tensor,    // a tensor built by _rebuild_tensor_v2 / _rebuild_parameter
  object,    // inert argparse.Namespace stand-in; fields in `dict`
};

enum class GlobalId { ordered_dict, rebuild_tensor_v2, rebuild_parameter, namespace_, storage_class };

struct Value;

struct DictData {
  std::vector<std::pair<Value*, Value*>> entries;  // insertion order
  std::unordered_map<std::string, size_t> index;   // hashable key -> position in entries
};

struct StorageRef {
  int64_t id = -1;      // reader-defined storage number
  SrcDType dtype = SrcDType::f32;
  int64_t offset = 0;   // first element of this (possibly view) storage within its root
  int64_t numel = 0;    // elements visible through this storage
};

struct TensorRef {
  Value* storage = nullptr;  // Kind::storage
  int64_t offset = 0;        // elements
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // elements
};

struct Value {
  explicit Value(Kind k) : kind(k) {}
  Kind kind;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string str;               // string / bytes / bigint; global: module
  std::string name;              // global: name
  GlobalId global = GlobalId::ordered_dict;
  SrcDType storage_dtype = SrcDType::f32;  // global storage_class: its element type
  bool ordered_dict = false;
  std::vector<Value*> items;     // tuple / list
  std::unique_ptr<DictData> dict;      // dict / object
  std::unique_ptr<StorageRef> storage; // storage
  std::unique_ptr<TensorRef> tensor;   // tensor
};

// Hard limits on what one unpickler accepts.
struct Limits {
  size_t max_objects = 4u << 20;
  size_t max_stack = 1u << 20;
  size_t max_marks = 1u << 16;
  size_t max_memo = 4u << 20;
  size_t max_bigint_bytes = 1024;
  size_t max_global_name = 1024;
};

// Maximum depth of the recursive walks over an unpickled value graph.
constexpr int kMaxWalkDepth = 256;

class Unpickler {
 public:
  // Called for BINPERSID with the popped persistent id; returns the value to
  // push (normally one made with make(Kind::storage)). Throws to reject.
  using PersistentLoad = std::function<Value*(Unpickler&, Value* pid)>;

  // `data` must outlive the unpickler; `what` names the input in messages
  // (e.g. "model.pt: archive/data.pkl").
  Unpickler(const uint8_t* data, size_t size, std::string what, Limits limits = Limits());

  void set_persistent_load(PersistentLoad fn) { persistent_load_ = std::move(fn); }

  // Parses one pickle starting at `*offset` and returns its result; on return
  // `*offset` is just past its STOP. Values stay owned by this unpickler.
  // Stack, marks and memo start empty for each call.
  Value* load(size_t* offset);

  // True when the last failed load() ran past the end of the input (so more
  // bytes might have let it succeed).
  bool ran_out_of_input() const { return ran_out_; }

  // Allocates a value owned by this unpickler (counts against max_objects).
  Value* make(Kind k);

  const std::string& what() const { return what_; }

  // Throws xlmr::Error "<what>: <msg>".
  [[noreturn]] void fail(const std::string& msg) const;

 private:
  // input
  uint8_t u8();
  const uint8_t* take(uint64_t n);
  uint64_t le(int nbytes);
  std::string line();

  // stack
  void push(Value* v);
  Value* pop();
  Value* top();
  std::vector<Value*> pop_mark();

  // helpers
  Value* make_string(const uint8_t* p, size_t n, bool utf8);
  Value* make_long(const uint8_t* p, size_t n);
  Value* lookup_global(const std::string& module, const std::string& name);
  Value* call(Value* callable, Value* args, bool newobj);
  void build(Value* obj, Value* state);
  void set_item(Value* dict, Value* key, Value* val);
  void insert_item(DictData& d, Value* key, Value* val);
  void memo_put(uint64_t idx, Value* v);
  Value* memo_get(uint64_t idx);

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::string what_;
  Limits limits_;
  bool ran_out_ = false;
  PersistentLoad persistent_load_;

  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  Value* none_ = nullptr;
  Value* true_ = nullptr;
  Value* false_ = nullptr;
};

// Key under which `key` is indexed in a dict (hashable scalars only); returns
// false for keys that have no such form (tuples, floats, ...).
bool dict_key_string(const Value* key, std::string* out);

// Looks up a string key in a dict or object value; nullptr if absent.
Value* dict_get(const Value* dict, const std::string& key);

// Human-readable kind name for messages.
const char* kind_name(Kind k);

}  // namespace pickle
}  // namespace xlmr
