// A road network with shortest paths: real C++ for the code splitter test.
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <queue>
#include <string>
#include <utility>
#include <vector>

namespace roads {

struct Edge {
    int to;
    double km;
};

class Graph {
public:
    int add_town(const std::string& name) {
        auto found = ids_.find(name);
        if (found != ids_.end()) {
            return found->second;
        }
        int id = static_cast<int>(names_.size());
        ids_.emplace(name, id);
        names_.push_back(name);
        edges_.emplace_back();
        return id;
    }

    void add_road(const std::string& a, const std::string& b, double km) {
        int x = add_town(a);
        int y = add_town(b);
        edges_[x].push_back({y, km});
        edges_[y].push_back({x, km});
    }

    std::size_t size() const { return names_.size(); }

    const std::string& name(int id) const { return names_.at(id); }

    std::optional<int> id(const std::string& name) const {
        auto found = ids_.find(name);
        if (found == ids_.end()) {
            return std::nullopt;
        }
        return found->second;
    }

    const std::vector<Edge>& roads_from(int id) const { return edges_.at(id); }

private:
    std::map<std::string, int> ids_;
    std::vector<std::string> names_;
    std::vector<std::vector<Edge>> edges_;
};

struct Route {
    double km = 0.0;
    std::vector<std::string> towns;
};

template <typename T>
using MinHeap = std::priority_queue<T, std::vector<T>, std::greater<T>>;

std::optional<Route> shortest_route(const Graph& g, const std::string& from, const std::string& to) {
    auto start = g.id(from);
    auto goal = g.id(to);
    if (!start || !goal) {
        return std::nullopt;
    }
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> dist(g.size(), inf);
    std::vector<int> prev(g.size(), -1);
    MinHeap<std::pair<double, int>> heap;
    dist[*start] = 0.0;
    heap.push({0.0, *start});
    while (!heap.empty()) {
        auto [d, town] = heap.top();
        heap.pop();
        if (d > dist[town]) {
            continue;
        }
        for (const Edge& e : g.roads_from(town)) {
            if (d + e.km < dist[e.to]) {
                dist[e.to] = d + e.km;
                prev[e.to] = town;
                heap.push({dist[e.to], e.to});
            }
        }
    }
    if (dist[*goal] == inf) {
        return std::nullopt;
    }
    Route route{dist[*goal], {}};
    for (int t = *goal; t != -1; t = prev[t]) {
        route.towns.insert(route.towns.begin(), g.name(t));
    }
    return route;
}

}  // namespace roads

int main() {
    roads::Graph g;
    g.add_road("Ashford", "Brookvale", 12.5);
    g.add_road("Brookvale", "Carrow", 7.0);
    g.add_road("Ashford", "Carrow", 25.0);
    g.add_road("Carrow", "Dunmore", 4.5);
    if (auto route = roads::shortest_route(g, "Ashford", "Dunmore")) {
        std::cout << route->km << " km:";
        for (const auto& town : route->towns) {
            std::cout << ' ' << town;
        }
        std::cout << '\n';
    }
    return 0;
}
