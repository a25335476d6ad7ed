// Opcode meanings follow CPython's Lib/pickletools.py. Only value-building opcodes are known here;
// the text-protocol and object-construction ones (INST, OBJ, NEWOBJ, EXT*) are refused, since
// torch.save writes none of them.
#include "io/restricted_pickle.h"

#include <cstring>
#include <unordered_map>

#include "cm/error.h"

namespace cm {
namespace {

using Kind = PickleValue::Kind;

class Machine {
 public:
  Machine(std::string_view bytes, const std::function<bool(const std::string&)>& allowed,
          const std::string& source)
      : in_(bytes), allowed_(allowed), source_(source) {}
  // Values can refer to each other in cycles (a list appended to itself); emptying every
  // container frees them all.
  ~Machine() {
    for (auto& v : all_) {
      v->items.clear();
      v->entries.clear();
    }
  }
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  PickleRef run() {
    while (true) {
      const std::size_t at = pos_;
      const uint8_t op = byte();
      if (op == '.') {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) fail(at, "STOP with an unbalanced stack");
        return stack_.back();
      }
      step(op, at);
    }
  }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw Error(source_ + ": pickle byte " + std::to_string(at) + ": " + what);
  }

  uint8_t byte() {
    if (pos_ >= in_.size()) fail(pos_, "ends without STOP (truncated)");
    return static_cast<uint8_t>(in_[pos_++]);
  }
  uint64_t uint_le(int n) {
    if (in_.size() - pos_ < static_cast<std::size_t>(n)) fail(pos_, "truncated argument");
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(in_[pos_ + k]);
    pos_ += n;
    return v;
  }
  std::string take(uint64_t n) {
    if (n > in_.size() - pos_)
      fail(pos_, "a " + std::to_string(n) + "-byte string runs past the end");
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string line() {
    const auto nl = in_.find('\n', pos_);
    if (nl == std::string_view::npos) fail(pos_, "unterminated GLOBAL name");
    std::string s(in_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return s;
  }

  PickleRef pop(std::size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail(at, "pops an empty stack");
    PickleRef v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  PickleRef& top(std::size_t at) {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail(at, "reads an empty stack");
    return stack_.back();
  }
  // The values above the topmost MARK, which is removed.
  std::vector<PickleRef> pop_mark(std::size_t at) {
    if (marks_.empty()) fail(at, "no MARK to pop to");
    const std::size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleRef> items(std::make_move_iterator(stack_.begin() + m),
                                 std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }

  void push_int(int64_t v) {
    auto r = make(Kind::kInt);
    r->i = v;
    stack_.push_back(std::move(r));
  }
  void push_string(std::string s) {
    auto r = make(Kind::kString);
    r->s = std::move(s);
    stack_.push_back(std::move(r));
  }
  void push_tuple(std::vector<PickleRef> items) {
    auto r = make(Kind::kTuple);
    r->items = std::move(items);
    stack_.push_back(std::move(r));
  }
  void push_global(std::string module, std::string name, std::size_t at) {
    const std::string full = module + "." + name;
    if (!allowed_(full))
      fail(at, "refuses global '" + full +
                   "': a checkpoint may only hold tensors, numbers, strings and containers");
    auto r = make(Kind::kGlobal);
    r->s = full;
    stack_.push_back(std::move(r));
  }

  void set_item(const PickleRef& dict, PickleRef key, PickleRef value, std::size_t at) {
    if (dict->kind != Kind::kDict)
      fail(at, "SETITEM on a " + std::string(pickle_kind_name(dict->kind)));
    if (key->kind == Kind::kString) {
      const auto [it, added] = dict->string_keys.emplace(key->s, dict->entries.size());
      if (!added) {
        dict->entries[it->second].second = std::move(value);
        return;
      }
    }
    dict->entries.emplace_back(std::move(key), std::move(value));
  }
  void append(const PickleRef& list, PickleRef value, std::size_t at) {
    if (list->kind != Kind::kList)
      fail(at, "APPEND to a " + std::string(pickle_kind_name(list->kind)));
    list->items.push_back(std::move(value));
  }

  void reduce(std::size_t at) {
    PickleRef args = pop(at);
    PickleRef callable = pop(at);
    if (callable->kind != Kind::kGlobal) fail(at, "REDUCE of a non-global");
    if (args->kind != Kind::kTuple) fail(at, "REDUCE with non-tuple arguments");
    if (callable->s == "collections.OrderedDict") {
      if (!args->items.empty()) fail(at, "OrderedDict called with arguments");
      stack_.push_back(make(Kind::kDict));
      return;
    }
    auto call = make(Kind::kCall);
    call->s = callable->s;
    call->items = args->items;
    stack_.push_back(std::move(call));
  }

  void step(uint8_t op, std::size_t at) {
    switch (op) {
      case 0x80:  // PROTO
        if (byte() > 5) fail(at, "pickle protocol above 5");
        return;
      case 0x95:  // FRAME: a length prefix only
        uint_le(8);
        return;
      case '(':
        marks_.push_back(stack_.size());
        return;  // MARK
      case '0':
        pop(at);
        return;  // POP
      case '1':
        pop_mark(at);
        return;  // POP_MARK
      case '2':
        stack_.push_back(top(at));
        return;  // DUP
      case 'N':
        stack_.push_back(make(Kind::kNone));
        return;
      case 0x88:    // NEWTRUE
      case 0x89: {  // NEWFALSE
        auto r = make(Kind::kBool);
        r->i = op == 0x88;
        stack_.push_back(std::move(r));
        return;
      }
      case 'J':
        push_int(static_cast<int32_t>(uint_le(4)));
        return;  // BININT
      case 'K':
        push_int(static_cast<int64_t>(uint_le(1)));
        return;  // BININT1
      case 'M':
        push_int(static_cast<int64_t>(uint_le(2)));
        return;     // BININT2
      case 0x8a: {  // LONG1
        const int n = static_cast<int>(uint_le(1));
        if (n > 8) fail(at, "integer of " + std::to_string(n) + " bytes");
        uint64_t v = n == 0 ? 0 : uint_le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign
        push_int(static_cast<int64_t>(v));
        return;
      }
      case 'G': {  // BINFLOAT, big-endian
        if (in_.size() - pos_ < 8) fail(pos_, "truncated argument");
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(in_[pos_ + k]);
        pos_ += 8;
        auto r = make(Kind::kFloat);
        std::memcpy(&r->f, &bits, 8);
        stack_.push_back(std::move(r));
        return;
      }
      case 'X':
        push_string(take(uint_le(4)));
        return;  // BINUNICODE
      case 0x8c:
        push_string(take(uint_le(1)));
        return;  // SHORT_BINUNICODE
      case 0x8d:
        push_string(take(uint_le(8)));
        return;  // BINUNICODE8
      case 'T':
        push_string(take(uint_le(4)));
        return;  // BINSTRING (Python 2 str)
      case 'U':
        push_string(take(uint_le(1)));
        return;  // SHORT_BINSTRING
      case ')':
        push_tuple({});
        return;  // EMPTY_TUPLE
      case 't':
        push_tuple(pop_mark(at));
        return;     // TUPLE
      case 0x85:    // TUPLE1
      case 0x86:    // TUPLE2
      case 0x87: {  // TUPLE3
        std::vector<PickleRef> items(op - 0x84);
        for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop(at);
        push_tuple(std::move(items));
        return;
      }
      case ']':
        stack_.push_back(make(Kind::kList));
        return;    // EMPTY_LIST
      case 'l': {  // LIST
        auto r = make(Kind::kList);
        r->items = pop_mark(at);
        stack_.push_back(std::move(r));
        return;
      }
      case 'a': {  // APPEND
        PickleRef v = pop(at);
        append(top(at), std::move(v), at);
        return;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark(at);
        const PickleRef& list = top(at);
        for (auto& v : items) append(list, std::move(v), at);
        return;
      }
      case '}':
        stack_.push_back(make(Kind::kDict));
        return;    // EMPTY_DICT
      case 'd': {  // DICT
        auto items = pop_mark(at);
        if (items.size() % 2) fail(at, "DICT with an odd number of items");
        auto r = make(Kind::kDict);
        for (std::size_t k = 0; k < items.size(); k += 2) set_item(r, items[k], items[k + 1], at);
        stack_.push_back(std::move(r));
        return;
      }
      case 's': {  // SETITEM
        PickleRef value = pop(at);
        PickleRef key = pop(at);
        set_item(top(at), std::move(key), std::move(value), at);
        return;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark(at);
        if (items.size() % 2) fail(at, "SETITEMS with an odd number of items");
        const PickleRef& dict = top(at);
        for (std::size_t k = 0; k < items.size(); k += 2)
          set_item(dict, items[k], items[k + 1], at);
        return;
      }
      case 'q':
        memo_[uint_le(1)] = top(at);
        return;  // BINPUT
      case 'r':
        memo_[uint_le(4)] = top(at);
        return;  // LONG_BINPUT
      case 0x94:
        memo_[memo_.size()] = top(at);
        return;    // MEMOIZE
      case 'h':    // BINGET
      case 'j': {  // LONG_BINGET
        const uint64_t key = uint_le(op == 'h' ? 1 : 4);
        const auto it = memo_.find(key);
        if (it == memo_.end()) fail(at, "memo " + std::to_string(key) + " was never stored");
        stack_.push_back(it->second);
        return;
      }
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        push_global(std::move(module), std::move(name), at);
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        PickleRef name = pop(at);
        PickleRef module = pop(at);
        if (name->kind != Kind::kString || module->kind != Kind::kString)
          fail(at, "STACK_GLOBAL of non-strings");
        push_global(module->s, name->s, at);
        return;
      }
      case 'Q': {  // BINPERSID
        PickleRef pid = pop(at);
        if (pid->kind != Kind::kTuple) fail(at, "persistent id is not a tuple");
        auto r = make(Kind::kPersistentId);
        r->items = pid->items;
        stack_.push_back(std::move(r));
        return;
      }
      case 'R':
        reduce(at);
        return;
      case 'b': {  // BUILD
        PickleRef state = pop(at);
        // torch.save's OrderedDict carries its _metadata attribute this way; attributes of a
        // plain mapping mean nothing for the weights, so they are dropped. Nothing else may be
        // built.
        if (top(at)->kind != Kind::kDict)
          fail(at, "BUILD on a " + std::string(pickle_kind_name(top(at)->kind)));
        return;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(at, std::string("unsupported opcode ") + hex);
      }
    }
  }

  PickleRef make(Kind kind) {
    auto v = std::make_shared<PickleValue>();
    v->kind = kind;
    all_.push_back(v);
    return v;
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  const std::function<bool(const std::string&)>& allowed_;
  const std::string& source_;
  std::vector<PickleRef> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, PickleRef> memo_;
  std::vector<PickleRef> all_;
};

}  // namespace

const char* pickle_kind_name(PickleValue::Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kPersistentId:
      return "persistent id";
    case Kind::kCall:
      return "call";
  }
  return "value";
}

void unpickle(std::string_view bytes, const std::function<bool(const std::string&)>& allowed,
              const std::string& source, const std::function<void(const PickleValue&)>& use) {
  Machine machine(bytes, allowed, source);
  use(*machine.run());
}

}  // namespace cm
