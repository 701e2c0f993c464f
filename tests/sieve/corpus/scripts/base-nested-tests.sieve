require "fileinto";
if allof (anyof (header :contains "subject" "draft", header :contains "subject" "money"),
          not allof (false, true),
          anyof (exists "Date", false)) { fileinto "nested"; }
if not not true { fileinto "double-not"; }
