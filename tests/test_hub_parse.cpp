// The Hub's answers read without the network (src/hub/hub_parse): what the fuzz target
// tests/fuzz/fuzz_hub.cpp feeds at random, here with the cases that matter.
#include <gtest/gtest.h>

#include "cm/error.h"
#include "hub/hub_parse.h"

using namespace cm::hub;

TEST(HubParse, HeaderLinesAndStatusLines) {
  std::map<std::string, std::string> h;
  read_header_line("HTTP/1.1 100 Continue\r\n", &h);
  read_header_line("X-Stale: 1\r\n", &h);
  read_header_line("HTTP/1.1 302 Found\r\n", &h);  // a new answer: its headers alone
  read_header_line("Location:   /a/b \r\n", &h);
  read_header_line("ETag:\r\n", &h);
  read_header_line("no colon here\r\n", &h);
  read_header_line("\r\n", &h);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h["location"], "/a/b ");
  EXPECT_EQ(h["etag"], "");
}

TEST(HubParse, SizesAndRetryAfter) {
  EXPECT_EQ(parse_file_size("0"), 0u);
  EXPECT_EQ(parse_file_size("18446744073709551"), 18446744073709551u);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1e3", "0x10", "99999999999999999999"})
    EXPECT_FALSE(parse_file_size(bad)) << bad;
  EXPECT_EQ(parse_retry_after("2", 60), 2.0);
  EXPECT_EQ(parse_retry_after("3600", 60), 60.0);
  for (const char* bad : {"", "-1", "nan", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "1s"})
    EXPECT_FALSE(parse_retry_after(bad, 60)) << bad;
}

TEST(HubParse, EtagsAndLocations) {
  EXPECT_EQ(normalize_etag("W/\"abc\""), "abc");
  EXPECT_EQ(normalize_etag("\"abc\""), "abc");
  EXPECT_EQ(resolve_location("https://h/a/b?x=1", "c"), "https://h/a/c");
  EXPECT_EQ(resolve_location("https://h/a/b", "/c"), "https://h/c");
  EXPECT_EQ(resolve_location("https://h/a/b", "//cdn/c"), "https:" "//cdn/c");
  EXPECT_EQ(resolve_location("https://h", "c"), "https://h/c");
  EXPECT_EQ(url_netloc("HTTPS://Host:8/p"), "host:8");
  EXPECT_EQ(url_netloc("ftp://h/p"), "");
}

TEST(HubParse, RepoInfo) {
  const std::string sha(40, 'a');
  const auto info = parse_repo_info(
      R"({"sha": ")" + sha + R"(", "siblings": [{"rfilename": "a"}, {"rfilename": "b/c"}]})", "x");
  EXPECT_EQ(info.commit, sha);
  EXPECT_EQ(info.files, (std::set<std::string>{"a", "b/c"}));
  for (const char* bad : {"", "[]", "{\"sha\": 1}", "{\"sha\": \"abc\", \"siblings\": []}",
                          "{\"sha\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                          "{\"sha\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"siblings\": 3}",
                          "{\"sha\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                          "\"siblings\": [{\"rfilename\": 7}]}"}) {
    try {
      parse_repo_info(bad, "org/x: bad answer");
      ADD_FAILURE() << bad;
    } catch (const cm::Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("org/x: bad answer", 0), 0u) << e.what();
    }
  }
}
