#include "weights/pickle.h"

#include <cstring>
#include <limits>

#include "engine/error.h"
#include "weights/file_io.h"

namespace xlmr {
namespace pickle {

namespace {

// Opcodes accepted by the unpickler (names as in CPython's pickle.py).
enum : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  INT = 'I',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINFLOAT = 'G',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

bool valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

std::string hex2(uint8_t b) {
  static const char hex[] = "0123456789abcdef";
  std::string s = "0x";
  s += hex[b >> 4];
  s += hex[b & 15];
  return s;
}

bool storage_class_dtype(const std::string& name, SrcDType* out) {
  static const struct {
    const char* name;
    SrcDType dtype;
  } table[] = {
      {"FloatStorage", SrcDType::f32},  {"HalfStorage", SrcDType::f16},  {"BFloat16Storage", SrcDType::bf16},
      {"DoubleStorage", SrcDType::f64}, {"LongStorage", SrcDType::i64},  {"IntStorage", SrcDType::i32},
      {"ShortStorage", SrcDType::i16},  {"CharStorage", SrcDType::i8},   {"ByteStorage", SrcDType::u8},
      {"BoolStorage", SrcDType::boolean},
  };
  for (const auto& e : table) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

bool as_int(const Value* v, int64_t* out) {
  if (v->kind != Kind::integer) return false;
  *out = v->i;
  return true;
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::bigint: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::bytes: return "bytes";
    case Kind::tuple: return "tuple";
    case Kind::list: return "list";
    case Kind::dict: return "dict";
    case Kind::global: return "global";
    case Kind::storage: return "storage";
    case Kind::tensor: return "tensor";
    case Kind::object: return "object";
  }
  return "?";
}

bool dict_key_string(const Value* key, std::string* out) {
  switch (key->kind) {
    case Kind::string: *out = "s:" + key->str; return true;
    case Kind::bytes: *out = "b:" + key->str; return true;
    case Kind::integer: *out = "i:" + std::to_string(key->i); return true;
    case Kind::boolean: *out = key->b ? "i:1" : "i:0"; return true;  // True == 1 in Python
    case Kind::none: *out = "n"; return true;
    default: return false;
  }
}

Value* dict_get(const Value* dict, const std::string& key) {
  if (!dict || !dict->dict) return nullptr;
  auto it = dict->dict->index.find("s:" + key);
  if (it == dict->dict->index.end()) return nullptr;
  return dict->dict->entries[it->second].second;
}

Unpickler::Unpickler(const uint8_t* data, size_t size, std::string what, Limits limits)
    : data_(data), size_(size), what_(std::move(what)), limits_(limits) {}

void Unpickler::fail(const std::string& msg) const { XLMR_THROW(what_ + ": " + msg); }

Value* Unpickler::make(Kind k) {
  if (arena_.size() >= limits_.max_objects) {
    fail("pickle creates more than " + std::to_string(limits_.max_objects) + " objects");
  }
  arena_.push_back(std::make_unique<Value>(k));
  Value* v = arena_.back().get();
  if (k == Kind::dict || k == Kind::object) v->dict = std::make_unique<DictData>();
  if (k == Kind::storage) v->storage = std::make_unique<StorageRef>();
  if (k == Kind::tensor) v->tensor = std::make_unique<TensorRef>();
  return v;
}

// ---- input ------------------------------------------------------------------

const uint8_t* Unpickler::take(uint64_t n) {
  if (n > size_ - pos_) {
    ran_out_ = true;
    fail("pickle truncated at offset " + std::to_string(op_pos_) + " (needs " + std::to_string(n) +
         " more bytes, " + std::to_string(size_ - pos_) + " left)");
  }
  const uint8_t* p = data_ + pos_;
  pos_ += static_cast<size_t>(n);
  return p;
}

uint8_t Unpickler::u8() { return *take(1); }

uint64_t Unpickler::le(int nbytes) {
  const uint8_t* p = take(static_cast<uint64_t>(nbytes));
  uint64_t v = 0;
  for (int k = nbytes - 1; k >= 0; --k) v = (v << 8) | p[k];
  return v;
}

std::string Unpickler::line() {
  size_t start = pos_;
  size_t limit = limits_.max_global_name;
  while (true) {
    if (pos_ >= size_) {
      ran_out_ = true;
      fail("pickle truncated at offset " + std::to_string(op_pos_) + " (unterminated text argument)");
    }
    if (data_[pos_] == '\n') break;
    if (pos_ - start >= limit) fail("overlong text argument at offset " + std::to_string(op_pos_));
    ++pos_;
  }
  std::string s(reinterpret_cast<const char*>(data_ + start), pos_ - start);
  ++pos_;  // the newline
  return s;
}

// ---- stack ------------------------------------------------------------------

void Unpickler::push(Value* v) {
  if (stack_.size() >= limits_.max_stack) {
    fail("pickle stack deeper than " + std::to_string(limits_.max_stack) + " at offset " + std::to_string(op_pos_));
  }
  stack_.push_back(v);
}

Value* Unpickler::top() {
  size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("pickle stack underflow at offset " + std::to_string(op_pos_));
  return stack_.back();
}

Value* Unpickler::pop() {
  Value* v = top();
  stack_.pop_back();
  return v;
}

std::vector<Value*> Unpickler::pop_mark() {
  if (marks_.empty()) fail("pickle MARK missing at offset " + std::to_string(op_pos_));
  size_t floor = marks_.back();
  marks_.pop_back();
  std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(floor), stack_.end());
  stack_.resize(floor);
  return items;
}

// ---- helpers ----------------------------------------------------------------

Value* Unpickler::make_string(const uint8_t* p, size_t n, bool utf8) {
  bool ok = !utf8 || valid_utf8(p, n);
  if (utf8 && !ok) fail("invalid UTF-8 in pickled string at offset " + std::to_string(op_pos_));
  Value* v = make(utf8 ? Kind::string : Kind::bytes);
  v->str.assign(reinterpret_cast<const char*>(p), n);
  return v;
}

Value* Unpickler::make_long(const uint8_t* p, size_t n) {
  // Little-endian two's complement; drop redundant sign bytes first.
  while (n > 1) {
    uint8_t hi = p[n - 1], next = p[n - 2];
    if ((hi == 0x00 && !(next & 0x80)) || (hi == 0xff && (next & 0x80))) {
      --n;
    } else {
      break;
    }
  }
  if (n <= 8) {
    uint64_t u = 0;
    for (size_t k = n; k-- > 0;) u = (u << 8) | p[k];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);
    int64_t s;
    std::memcpy(&s, &u, 8);
    Value* v = make(Kind::integer);
    v->i = s;
    return v;
  }
  if (n > limits_.max_bigint_bytes) fail("pickled integer too large at offset " + std::to_string(op_pos_));
  Value* v = make(Kind::bigint);
  v->str.assign(reinterpret_cast<const char*>(p), n);
  return v;
}

Value* Unpickler::lookup_global(const std::string& module, const std::string& name) {
  Value* g = nullptr;
  auto mk = [&](GlobalId id) {
    g = make(Kind::global);
    g->global = id;
    g->str = module;
    g->name = name;
  };
  SrcDType dt;
  if (module == "collections" && name == "OrderedDict") {
    mk(GlobalId::ordered_dict);
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    mk(GlobalId::rebuild_tensor_v2);
  } else if (module == "torch._utils" && name == "_rebuild_parameter") {
    mk(GlobalId::rebuild_parameter);
  } else if (module == "argparse" && name == "Namespace") {
    mk(GlobalId::namespace_);
  } else if (module == "torch" && storage_class_dtype(name, &dt)) {
    mk(GlobalId::storage_class);
    g->storage_dtype = dt;
  } else {
    fail("refusing to unpickle global '" + detail::printable(module) + "." + detail::printable(name) +
         "' (not an allowed tensor/state-dict type)");
  }
  return g;
}

void Unpickler::set_item(Value* dict, Value* key, Value* val) {
  if (dict->kind != Kind::dict) {
    fail(std::string("SETITEM on a ") + kind_name(dict->kind) + ", not a dict, at offset " + std::to_string(op_pos_));
  }
  if (key->kind == Kind::list || key->kind == Kind::dict || key->kind == Kind::object) {
    fail(std::string("unhashable dict key of type ") + kind_name(key->kind) + " at offset " + std::to_string(op_pos_));
  }
  insert_item(*dict->dict, key, val);
}

void Unpickler::insert_item(DictData& d, Value* key, Value* val) {
  std::string ks;
  if (dict_key_string(key, &ks)) {
    auto it = d.index.find(ks);
    if (it != d.index.end()) {
      d.entries[it->second].second = val;
      return;
    }
    d.index.emplace(ks, d.entries.size());
  }
  d.entries.emplace_back(key, val);
}

Value* Unpickler::call(Value* callable, Value* args, bool newobj) {
  const std::string at = " at offset " + std::to_string(op_pos_);
  const char* op = newobj ? "NEWOBJ" : "REDUCE";
  if (callable->kind != Kind::global) {
    fail(std::string(op) + " on a " + kind_name(callable->kind) + ", not a class or function" + at);
  }
  if (args->kind != Kind::tuple) fail(std::string(op) + " arguments are not a tuple" + at);
  const std::vector<Value*>& a = args->items;
  const std::string gname = detail::printable(callable->str) + "." + detail::printable(callable->name);
  switch (callable->global) {
    case GlobalId::ordered_dict: {
      Value* d = make(Kind::dict);
      d->ordered_dict = true;
      if (a.empty() || newobj) return d;
      if (a.size() != 1) fail("collections.OrderedDict called with " + std::to_string(a.size()) + " arguments" + at);
      Value* src = a[0];
      if (src->kind == Kind::dict) {
        for (auto& kv : src->dict->entries) set_item(d, kv.first, kv.second);
      } else if (src->kind == Kind::list || src->kind == Kind::tuple) {
        for (Value* pair : src->items) {
          if ((pair->kind != Kind::tuple && pair->kind != Kind::list) || pair->items.size() != 2) {
            fail("collections.OrderedDict argument is not a sequence of pairs" + at);
          }
          set_item(d, pair->items[0], pair->items[1]);
        }
      } else {
        fail(std::string("collections.OrderedDict called with a ") + kind_name(src->kind) + at);
      }
      return d;
    }
    case GlobalId::namespace_: {
      if (!a.empty()) fail("argparse.Namespace called with positional arguments" + at);
      return make(Kind::object);
    }
    case GlobalId::rebuild_parameter: {
      if (newobj) break;
      if (a.size() != 3 && a.size() != 4) {
        fail("_rebuild_parameter expects 3 arguments, got " + std::to_string(a.size()) + at);
      }
      if (a[0]->kind != Kind::tensor) fail("_rebuild_parameter argument is not a tensor" + at);
      return a[0];
    }
    case GlobalId::rebuild_tensor_v2: {
      if (newobj) break;
      if (a.size() != 6 && a.size() != 7) {
        fail("_rebuild_tensor_v2 expects 6 or 7 arguments, got " + std::to_string(a.size()) + at);
      }
      if (a[0]->kind != Kind::storage) {
        fail(std::string("_rebuild_tensor_v2 storage argument is a ") + kind_name(a[0]->kind) + at);
      }
      Value* t = make(Kind::tensor);
      TensorRef& tr = *t->tensor;
      tr.storage = a[0];
      if (!as_int(a[1], &tr.offset) || tr.offset < 0) fail("_rebuild_tensor_v2 storage offset is not a non-negative int" + at);
      for (int which = 0; which < 2; ++which) {
        Value* seq = a[2 + which];
        if (seq->kind != Kind::tuple && seq->kind != Kind::list) {
          fail(std::string("_rebuild_tensor_v2 ") + (which ? "stride" : "size") + " is not a tuple" + at);
        }
        if (seq->items.size() > 64) fail("_rebuild_tensor_v2 tensor has more than 64 dimensions" + at);
        std::vector<int64_t>& dst = which ? tr.strides : tr.sizes;
        for (Value* e : seq->items) {
          int64_t x;
          if (!as_int(e, &x) || x < 0) {
            fail(std::string("_rebuild_tensor_v2 ") + (which ? "stride" : "size") +
                 " holds a negative or non-integer entry" + at);
          }
          dst.push_back(x);
        }
      }
      if (tr.sizes.size() != tr.strides.size()) fail("_rebuild_tensor_v2 size and stride differ in length" + at);
      return t;
    }
    case GlobalId::storage_class:
      break;
  }
  fail("calling " + gname + " via " + op + " is not supported" + at);
}

void Unpickler::build(Value* obj, Value* state) {
  const std::string at = " at offset " + std::to_string(op_pos_);
  if (obj->kind == Kind::dict && obj->ordered_dict) {
    // torch keeps the state dict's _metadata here; it is not needed.
    if (state->kind != Kind::none && state->kind != Kind::dict && state->kind != Kind::tuple) {
      fail(std::string("BUILD of an OrderedDict with a ") + kind_name(state->kind) + at);
    }
    return;
  }
  if (obj->kind == Kind::object) {
    Value* fields = state;
    if (state->kind == Kind::tuple && state->items.size() == 2 && state->items[1]->kind == Kind::none) {
      fields = state->items[0];
    }
    if (fields->kind == Kind::none) return;
    if (fields->kind != Kind::dict) fail(std::string("BUILD of a Namespace with a ") + kind_name(fields->kind) + at);
    for (auto& kv : fields->dict->entries) {
      if (kv.first->kind != Kind::string) fail("BUILD of a Namespace with a non-string attribute name" + at);
      insert_item(*obj->dict, kv.first, kv.second);
    }
    return;
  }
  fail(std::string("BUILD on a ") + kind_name(obj->kind) + at);
}

void Unpickler::memo_put(uint64_t idx, Value* v) {
  auto it = memo_.find(idx);
  if (it != memo_.end()) {
    it->second = v;
    return;
  }
  if (memo_.size() >= limits_.max_memo) fail("pickle memo larger than " + std::to_string(limits_.max_memo));
  memo_.emplace(idx, v);
}

Value* Unpickler::memo_get(uint64_t idx) {
  auto it = memo_.find(idx);
  if (it == memo_.end()) {
    fail("pickle refers to unknown memo entry " + std::to_string(idx) + " at offset " + std::to_string(op_pos_));
  }
  return it->second;
}

// ---- the interpreter --------------------------------------------------------

Value* Unpickler::load(size_t* offset) {
  stack_.clear();
  marks_.clear();
  memo_.clear();
  ran_out_ = false;
  if (*offset > size_) fail("pickle offset past the end of the input");
  pos_ = *offset;
  if (!none_) {
    none_ = make(Kind::none);
    true_ = make(Kind::boolean);
    true_->b = true;
    false_ = make(Kind::boolean);
  }

  while (true) {
    op_pos_ = pos_;
    uint8_t op = u8();
    switch (op) {
      case PROTO: {
        uint8_t proto = u8();
        if (proto > 5) fail("unsupported pickle protocol " + std::to_string(proto));
        break;
      }
      case FRAME: {
        uint64_t n = le(8);
        if (n > size_ - pos_) {
          ran_out_ = true;
          fail("pickle frame of " + std::to_string(n) + " bytes runs past the end at offset " + std::to_string(op_pos_));
        }
        break;
      }
      case STOP: {
        Value* result = pop();
        *offset = pos_;
        stack_.clear();
        marks_.clear();
        memo_.clear();
        return result;
      }
      case MARK:
        if (marks_.size() >= limits_.max_marks) fail("too many nested pickle MARKs at offset " + std::to_string(op_pos_));
        marks_.push_back(stack_.size());
        break;
      case POP: {
        size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() > floor) {
          stack_.pop_back();
        } else {
          pop_mark();
        }
        break;
      }
      case POP_MARK:
        pop_mark();
        break;
      case DUP:
        push(top());
        break;
      case NONE:
        push(none_);
        break;
      case NEWTRUE:
        push(true_);
        break;
      case NEWFALSE:
        push(false_);
        break;
      case INT: {
        std::string s = line();
        if (s == "00") {
          push(false_);
          break;
        }
        if (s == "01") {
          push(true_);
          break;
        }
        size_t k = 0;
        bool neg = false;
        if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
          neg = s[0] == '-';
          k = 1;
        }
        if (k == s.size() || s.size() - k > 18) fail("malformed INT argument at offset " + std::to_string(op_pos_));
        int64_t val = 0;
        for (; k < s.size(); ++k) {
          if (s[k] < '0' || s[k] > '9') fail("malformed INT argument at offset " + std::to_string(op_pos_));
          val = val * 10 + (s[k] - '0');
        }
        Value* v = make(Kind::integer);
        v->i = neg ? -val : val;
        push(v);
        break;
      }
      case BININT: {
        uint32_t u = static_cast<uint32_t>(le(4));
        int32_t s;
        std::memcpy(&s, &u, 4);
        Value* v = make(Kind::integer);
        v->i = s;
        push(v);
        break;
      }
      case BININT1: {
        Value* v = make(Kind::integer);
        v->i = u8();
        push(v);
        break;
      }
      case BININT2: {
        Value* v = make(Kind::integer);
        v->i = static_cast<int64_t>(le(2));
        push(v);
        break;
      }
      case LONG1: {
        size_t n = u8();
        const uint8_t* p = take(n);
        push(make_long(p, n));
        break;
      }
      case LONG4: {
        uint32_t u = static_cast<uint32_t>(le(4));
        int32_t n;
        std::memcpy(&n, &u, 4);
        if (n < 0) fail("negative LONG4 length at offset " + std::to_string(op_pos_));
        if (static_cast<size_t>(n) > limits_.max_bigint_bytes) {
          fail("pickled integer too large at offset " + std::to_string(op_pos_));
        }
        const uint8_t* p = take(static_cast<uint64_t>(n));
        push(make_long(p, static_cast<size_t>(n)));
        break;
      }
      case BINFLOAT: {
        const uint8_t* p = take(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];  // big-endian
        Value* v = make(Kind::floating);
        std::memcpy(&v->f, &u, 8);
        push(v);
        break;
      }
      case BINUNICODE:
      case SHORT_BINUNICODE:
      case BINUNICODE8: {
        uint64_t n = op == SHORT_BINUNICODE ? u8() : le(op == BINUNICODE ? 4 : 8);
        const uint8_t* p = take(n);
        push(make_string(p, static_cast<size_t>(n), true));
        break;
      }
      case BINBYTES:
      case SHORT_BINBYTES:
      case BINBYTES8: {
        uint64_t n = op == SHORT_BINBYTES ? u8() : le(op == BINBYTES ? 4 : 8);
        const uint8_t* p = take(n);
        push(make_string(p, static_cast<size_t>(n), false));
        break;
      }
      case BINSTRING:
      case SHORT_BINSTRING: {
        uint64_t n;
        if (op == SHORT_BINSTRING) {
          n = u8();
        } else {
          uint32_t u = static_cast<uint32_t>(le(4));
          int32_t s;
          std::memcpy(&s, &u, 4);
          if (s < 0) fail("negative BINSTRING length at offset " + std::to_string(op_pos_));
          n = static_cast<uint64_t>(s);
        }
        const uint8_t* p = take(n);
        // Python 2 str: text when it decodes as UTF-8, raw bytes otherwise.
        push(make_string(p, static_cast<size_t>(n), valid_utf8(p, static_cast<size_t>(n))));
        break;
      }
      case EMPTY_TUPLE:
        push(make(Kind::tuple));
        break;
      case TUPLE: {
        std::vector<Value*> items = pop_mark();
        Value* t = make(Kind::tuple);
        t->items = std::move(items);
        push(t);
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        size_t n = static_cast<size_t>(op - TUPLE1 + 1);
        std::vector<Value*> items(n);
        for (size_t k = n; k-- > 0;) items[k] = pop();
        Value* t = make(Kind::tuple);
        t->items = std::move(items);
        push(t);
        break;
      }
      case EMPTY_LIST:
        push(make(Kind::list));
        break;
      case LIST: {
        std::vector<Value*> items = pop_mark();
        Value* l = make(Kind::list);
        l->items = std::move(items);
        push(l);
        break;
      }
      case APPEND: {
        Value* v = pop();
        Value* l = top();
        if (l->kind != Kind::list) fail(std::string("APPEND to a ") + kind_name(l->kind) + " at offset " + std::to_string(op_pos_));
        l->items.push_back(v);
        break;
      }
      case APPENDS: {
        std::vector<Value*> items = pop_mark();
        Value* l = top();
        if (l->kind != Kind::list) fail(std::string("APPENDS to a ") + kind_name(l->kind) + " at offset " + std::to_string(op_pos_));
        l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case EMPTY_DICT:
        push(make(Kind::dict));
        break;
      case DICT: {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) fail("DICT with an odd number of items at offset " + std::to_string(op_pos_));
        Value* d = make(Kind::dict);
        for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        push(d);
        break;
      }
      case SETITEM: {
        Value* v = pop();
        Value* k = pop();
        set_item(top(), k, v);
        break;
      }
      case SETITEMS: {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items at offset " + std::to_string(op_pos_));
        Value* d = top();
        for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        break;
      }
      case GLOBAL: {
        std::string module = line();
        std::string name = line();
        push(lookup_global(module, name));
        break;
      }
      case STACK_GLOBAL: {
        Value* name = pop();
        Value* module = pop();
        if (module->kind != Kind::string || name->kind != Kind::string) {
          fail("STACK_GLOBAL operands are not strings at offset " + std::to_string(op_pos_));
        }
        push(lookup_global(module->str, name->str));
        break;
      }
      case REDUCE: {
        Value* args = pop();
        Value* callable = pop();
        push(call(callable, args, false));
        break;
      }
      case NEWOBJ: {
        Value* args = pop();
        Value* cls = pop();
        push(call(cls, args, true));
        break;
      }
      case BUILD: {
        Value* state = pop();
        build(top(), state);
        break;
      }
      case BINPUT:
        memo_put(u8(), top());
        break;
      case LONG_BINPUT:
        memo_put(le(4), top());
        break;
      case MEMOIZE:
        memo_put(memo_.size(), top());
        break;
      case BINGET:
        push(memo_get(u8()));
        break;
      case LONG_BINGET:
        push(memo_get(le(4)));
        break;
      case BINPERSID: {
        Value* pid = pop();
        if (!persistent_load_) fail("pickle uses a persistent id where none is expected at offset " + std::to_string(op_pos_));
        Value* v = persistent_load_(*this, pid);
        if (!v) fail("persistent id could not be resolved at offset " + std::to_string(op_pos_));
        push(v);
        break;
      }
      default:
        fail("unsupported pickle opcode " + hex2(op) + " at offset " + std::to_string(op_pos_));
    }
  }
}

}  // namespace pickle
}  // namespace xlmr
