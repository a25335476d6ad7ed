// A pickle interpreter that builds values and never calls anything: the opcodes torch.save uses
// (protocols 2 to 5) for containers, numbers and strings, plus globals from an allow-list. A call
// (REDUCE) of an allowed global is recorded as a kCall value for the caller to interpret;
// OrderedDict() becomes an empty dict. Any other global, or any other opcode, is a cm::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cm {

struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kPersistentId,
    kCall
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;                 // kInt, kBool
  double f = 0;                  // kFloat
  std::string s;                 // kString; kGlobal and kCall: "module.name"
  std::vector<PickleRef> items;  // kTuple, kList; kCall: the arguments; kPersistentId: its tuple
  std::vector<std::pair<PickleRef, PickleRef>> entries;  // kDict, in insertion order
  std::map<std::string, std::size_t> string_keys;        // kDict: index of each string key
};

const char* pickle_kind_name(PickleValue::Kind kind);

// Runs the pickle and hands its value to `use`; the values live only during that call. `allowed`
// answers for "module.name" of each GLOBAL; `source` names the pickle in errors.
void unpickle(std::string_view bytes, const std::function<bool(const std::string&)>& allowed,
              const std::string& source, const std::function<void(const PickleValue&)>& use);

}  // namespace cm
