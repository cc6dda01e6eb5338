// Runs an Elasticsearch query_string (Lucene syntax) over documents with Apache Lucene's
// classic QueryParser and MemoryIndex, as Elasticsearch evaluates it on keyword fields:
// values are indexed untokenized and matched case-sensitively, `_exists_:f` is a term on the
// names of the fields a document has (Elasticsearch's _field_names), and a boolean group with
// only negative clauses gets a match-all clause added (Elasticsearch's
// Queries.fixNegativeQueryIfNeeded, applied by its query_string parser to every group).
//
// usage: java -cp <lucene core, queryparser, memory jars> LuceneMatch.java QUERY_FILE < DOCS
// DOCS: one document per line: id, then field TAB value pairs, all TAB-separated, with
// backslash, tab, line feed and carriage return escaped as \\ \t \n \r. Prints the ids of the
// documents that match.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.core.KeywordAnalyzer;
import org.apache.lucene.index.memory.MemoryIndex;
import org.apache.lucene.queryparser.classic.ParseException;
import org.apache.lucene.queryparser.classic.QueryParser;
import org.apache.lucene.search.BooleanClause;
import org.apache.lucene.search.BooleanQuery;
import org.apache.lucene.search.MatchAllDocsQuery;
import org.apache.lucene.search.Query;

public class LuceneMatch {
    static class ElasticsearchLikeParser extends QueryParser {
        ElasticsearchLikeParser(Analyzer analyzer) {
            super("_all", analyzer);
            setAllowLeadingWildcard(true);
        }

        @Override
        protected Query getBooleanQuery(List<BooleanClause> clauses) throws ParseException {
            Query query = super.getBooleanQuery(clauses);
            if (!(query instanceof BooleanQuery)) {
                return query;
            }
            BooleanQuery bool = (BooleanQuery) query;
            for (BooleanClause clause : bool.clauses()) {
                if (!clause.isProhibited()) {
                    return query;
                }
            }
            BooleanQuery.Builder fixed = new BooleanQuery.Builder();
            for (BooleanClause clause : bool.clauses()) {
                fixed.add(clause);
            }
            fixed.add(new MatchAllDocsQuery(), BooleanClause.Occur.FILTER);
            return fixed.build();
        }
    }

    static String unescape(String s) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char n = s.charAt(++i);
                out.append(n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n);
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    public static void main(String[] args) throws Exception {
        Analyzer keyword = new KeywordAnalyzer();
        String text = Files.readString(Path.of(args[0]), StandardCharsets.UTF_8).strip();
        Query query = new ElasticsearchLikeParser(keyword).parse(text);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] cells = line.split("\t", -1);
            MemoryIndex index = new MemoryIndex();
            for (int i = 1; i + 1 < cells.length; i += 2) {
                index.addField(unescape(cells[i]), unescape(cells[i + 1]), keyword);
            }
            if (index.search(query) > 0.0f) {
                System.out.println(unescape(cells[0]));
            }
        }
    }
}
