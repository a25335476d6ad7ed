// The Hub's environment variables, read with huggingface_hub's precedence, and model names.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cm/error.h"
#include "cm/hub.h"
#include "hub/hub_cache.h"

namespace cm {

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string expand_user(const std::string& path) {
  if (path == "~" || path.rfind("~/", 0) == 0) return env("HOME") + path.substr(1);
  return path;
}

std::string hf_home() {
  if (!env("HF_HOME").empty()) return expand_user(env("HF_HOME"));
  const std::string xdg = env("XDG_CACHE_HOME");
  return (xdg.empty() ? expand_user("~/.cache") : expand_user(xdg)) + "/huggingface";
}

// Tokens pasted into files or variables often carry a newline.
std::optional<std::string> clean_token(std::string token) {
  token.erase(std::remove(token.begin(), token.end(), '\r'), token.end());
  token.erase(std::remove(token.begin(), token.end(), '\n'), token.end());
  const size_t first = token.find_first_not_of(" \t");
  if (first == std::string::npos) return std::nullopt;
  token = token.substr(first, token.find_last_not_of(" \t") - first + 1);
  return token;
}

bool is_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// huggingface_hub's validate_repo_id: [org/]name of word characters, '-' and '.', each part
// starting and ending with a word character, no "--" or "..", at most 96 characters.
bool is_repo_id(const std::string& id) {
  if (id.empty() || id.size() > 96) return false;
  if (id.find("--") != std::string::npos || id.find("..") != std::string::npos) return false;
  if (id.size() >= 4 && id.compare(id.size() - 4, 4, ".git") == 0) return false;
  if (std::count(id.begin(), id.end(), '/') > 1) return false;
  const size_t slash = id.find('/');
  for (const std::string& part :
       {id.substr(0, slash),
        slash == std::string::npos ? std::string("x") : id.substr(slash + 1)}) {
    if (part.empty() || !is_word_char(part.front()) || !is_word_char(part.back())) return false;
    for (char c : part) {
      if (!is_word_char(c) && c != '-' && c != '.') return false;
    }
  }
  return true;
}

}  // namespace

std::string hub_cache_dir() {
  if (!env("HF_HUB_CACHE").empty()) return expand_user(env("HF_HUB_CACHE"));
  if (!env("HUGGINGFACE_HUB_CACHE").empty()) return expand_user(env("HUGGINGFACE_HUB_CACHE"));
  return hf_home() + "/hub";
}

std::string hub_endpoint() {
  std::string endpoint = env("HF_ENDPOINT");
  if (endpoint.empty()) endpoint = "https://huggingface.co";
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

bool hub_offline_from_env() {
  std::string value = env("HF_HUB_OFFLINE");
  if (value.empty()) value = env("TRANSFORMERS_OFFLINE");
  std::transform(value.begin(), value.end(), value.begin(),
                 [](unsigned char c) { return std::toupper(c); });
  return value == "1" || value == "ON" || value == "YES" || value == "TRUE";
}

std::optional<std::string> hub_token() {
  if (auto t = clean_token(env("HF_TOKEN"))) return t;
  if (auto t = clean_token(env("HUGGING_FACE_HUB_TOKEN"))) return t;
  const std::string path =
      env("HF_TOKEN_PATH").empty() ? hf_home() + "/token" : expand_user(env("HF_TOKEN_PATH"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return clean_token(
      std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
}

std::optional<RepoSpec> parse_repo_spec(const std::string& spec) {
  const size_t at = spec.find('@');
  RepoSpec out;
  out.repo_id = spec.substr(0, at);
  if (!is_repo_id(out.repo_id)) return std::nullopt;
  if (at != std::string::npos) {
    out.revision = spec.substr(at + 1);
    hub::validate_revision(out.revision);
  }
  return out;
}

// The same with or without the network half of the client (CM_HUB): download() says which.
std::string resolve_model(const std::string& spec, const HubOptions& options) {
  std::error_code ec;
  if (std::filesystem::exists(spec, ec)) return spec;
  const auto repo = parse_repo_spec(spec);
  if (!repo) return spec;  // a path after all: the loader says that it doesn't exist
  return download(repo->repo_id, repo->revision, options);
}

}  // namespace cm
